"""Storage: guest disks that are LUNs reached through NPIV virtual ports (SUSE block-npiv).

Procedure, on every host whose lab file has an `npiv:` section and whose preflight
passes (an Online NPort HBA with a free vport on the lab's fabric, SUSE's block-npiv
scripts): start a guest whose disk is the lab's LUN through a vport of the host's pool;
the vport must be there with that WWPN and Active, the LUN visible behind the target
port on the host and as xvdb in the guest; the guest writes a random pattern, and the
guest and the host read back the same checksum; destroy the guest: the vport must go
and npiv_vports_inuse be back where it was. Twice, to catch leaks. Then migrate an NPIV
guest to a second NPIV host: the vport must follow it.

Plus, on any host: a guest with many disks whose hotplug scripts take long, with and
without SUSE's per-device hotplug timeout key, when the build's libxl reads it.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator

import pytest

from harness.guests.guest import Guest, GuestFactory, GuestFailed
from harness.host import Host
from harness.hotplug import (
    HOTPLUG_TIMEOUT_KEY,
    HOTPLUG_TIMEOUT_MESSAGE,
    LIBXL_HOTPLUG_TIMEOUT,
    hotplug_timeout_key_support,
)
from harness.migration import migrate
from harness.migration_hosts import paired
from harness.npiv.preflight import npiv_preflight
from harness.npiv.vports import NpivHost
from harness.plugin import BootedHosts, XenhilRun

pytestmark = pytest.mark.area("storage")

PATTERN_MB = 4
CYCLES = 2


def npiv_host(host: Host) -> NpivHost:
    """The host's NPIV side, or a skip naming exactly what is missing."""
    preflight = npiv_preflight(host, host.spec.npiv)
    if not preflight.ready:
        pytest.skip(f"{host.name}: NPIV scenarios need: " + "; ".join(preflight.missing))
    assert preflight.port is not None and host.spec.npiv is not None
    return NpivHost(host, host.spec.npiv, preflight.port)


def write_and_check_pattern(guest: Guest, host: Host, device: str, host_device: str) -> None:
    """The guest writes random data to `device`; the guest and the host (reading the LUN
    under it) must read back the same checksum."""
    written = guest.run(
        f"dd if=/dev/urandom of=/tmp/pattern bs=1M count={PATTERN_MB} 2>/dev/null && "
        f"dd if=/tmp/pattern of={device} bs=1M oflag=direct 2>/dev/null && "
        "sha256sum < /tmp/pattern").stdout.split()[0]
    guest_read = guest.run(
        f"dd if={device} bs=1M count={PATTERN_MB} iflag=direct 2>/dev/null | sha256sum"
    ).stdout.split()[0]
    host_read = host.run(f"dd if={host_device} bs=1M count={PATTERN_MB} iflag=direct "
                         "2>/dev/null | sha256sum").stdout.split()[0]
    assert guest_read == written, f"the guest reads back other data from {device}"
    assert host_read == written, f"{host.name}: the LUN ({host_device}) holds other data " \
                                 "than the guest wrote to its disk"


@pytest.mark.needs("fc_hba")
def test_npiv_guest_disk_cycle(xen_host: Host, guests: GuestFactory) -> None:
    npiv = npiv_host(xen_host)
    leftovers = npiv.leaked()
    assert not leftovers, (f"{xen_host.name}: vports of the pool exist before the test: "
                           f"{', '.join(v.name + ' ' + str(v.port_name) for v in leftovers)}")
    in_use_before = npiv.vports_in_use()
    for cycle in range(1, CYCLES + 1):
        disk = npiv.disk()
        guest = guests(on=xen_host, name=f"npiv-{cycle}",
                         disks=[disk.xl_disk(npiv.fields, "xvdb")])
        vport = npiv.wait_vport_active(disk.vport.wwpn)
        assert vport.node_name == disk.vport.wwnn, \
            f"{vport.name} has WWNN {vport.node_name}, block-npiv was given {disk.vport.wwnn}"
        lun = npiv.wait_lun(vport, disk.lun)
        assert guest.run("test -b /dev/xvdb", check=False).ok, "the guest has no xvdb"
        write_and_check_pattern(guest, xen_host, "/dev/xvdb", f"/dev/{lun.block}")
        guest.destroy()
        npiv.wait_vport_gone(disk.vport.wwpn)
        assert npiv.vports_in_use() == in_use_before, (
            f"cycle {cycle}: npiv_vports_inuse of {npiv.port.name} is "
            f"{npiv.vports_in_use()}, was {in_use_before} before the guest")
    assert not npiv.leaked(), "vports of the pool left after every guest went"


@pytest.fixture
def npiv_pair(xen_host: Host, xenhil: XenhilRun, booted_hosts: BootedHosts) -> Iterator[
        tuple[NpivHost, NpivHost]]:
    """The host under test and another host of the lab with NPIV, both on the build,
    paired for migration during the test."""
    source = npiv_host(xen_host)
    others = [name for name, host in xenhil.hosts.items()
              if name != xen_host.name and host.spec.npiv is not None]
    if not others:
        pytest.skip(f"NPIV migration needs a second host with an npiv: section; "
                    f"selected: {', '.join(xenhil.hosts)}")
    destination = booted_hosts.get(others[0])
    if destination.spec.link_address is None:
        pytest.skip(f"{destination.name}: no link_address in the lab file (migration target)")
    with paired([xen_host, destination]):
        yield source, npiv_host(destination)


@pytest.mark.needs("fc_hba")
@pytest.mark.two_hosts
def test_npiv_guest_migrates_with_its_vport(npiv_pair: tuple[NpivHost, NpivHost],
                                            guests: GuestFactory) -> None:
    source, destination = npiv_pair
    disk = source.disk()
    guest = guests(on=source.host, name="npiv-migrate",
                     disks=[disk.xl_disk(source.fields, "xvdb")])
    lun = source.wait_lun(source.wait_vport_active(disk.vport.wwpn), disk.lun)
    write_and_check_pattern(guest, source.host, "/dev/xvdb", f"/dev/{lun.block}")
    migrate(guest, destination.host)  # and the guest kept running, still counting
    moved = destination.wait_vport_active(disk.vport.wwpn)
    source.wait_vport_gone(disk.vport.wwpn)
    destination_lun = destination.wait_lun(moved, disk.lun)
    write_and_check_pattern(guest, destination.host, "/dev/xvdb",
                            f"/dev/{destination_lun.block}")


# The many-disks hotplug scenario: every disk's hotplug script holds one lock for
# SLOW_SECONDS (as slow storage does under the block script's own lock), so the last
# of DISKS waits DISKS * SLOW_SECONDS: beyond libxl's 40 s without the key.
DISKS = 6
SLOW_SECONDS = 8
# The key's value: each script may take DISKS * 32 s, room for the block script's own
# time, which is long under TCG (seen on the virtual lab: over 30 s per disk).
PER_DEVICE_SECONDS = 4 * SLOW_SECONDS
SLOW_SCRIPT = "/etc/xen/scripts/xenhil-slow-block"
DISK_DIR = "/var/lib/xen/images/xenhil/hotplug"
SLOW_SCRIPT_TEXT = f"""#!/bin/sh
# xen-hil: libxl's block script, each "add" held {SLOW_SECONDS} s under one lock first,
# as slow storage serialised by the block script's own lock is.
if [ "$1" = add ]; then
    exec 9>/run/xenhil-slow-block.lock
    flock 9
    sleep {SLOW_SECONDS}
    exec 9>&-
fi
exec "$(dirname "$0")/block" "$@"
"""


@pytest.fixture
def slow_disks(xen_host: Host) -> Iterator[list[str]]:
    supported, evidence = hotplug_timeout_key_support(xen_host)
    if not supported:
        pytest.skip(f"{xen_host.name}: {evidence}")
    xen_host.run(f"mkdir -p {DISK_DIR} && printf '%s' {shlex.quote(SLOW_SCRIPT_TEXT)} > "
                 f"{SLOW_SCRIPT} && chmod 755 {SLOW_SCRIPT} && for i in $(seq 1 {DISKS}); do "
                 f"truncate -s 1M {DISK_DIR}/disk$i.img; done")
    yield [f"format=raw, vdev=xvd{chr(ord('b') + i)}, access=rw, "
           f"script={SLOW_SCRIPT}, target={DISK_DIR}/disk{i + 1}.img" for i in range(DISKS)]
    xen_host.run(f"xenstore-rm {HOTPLUG_TIMEOUT_KEY}", check=False)
    release_disks(xen_host)
    xen_host.run(f"rm -rf {DISK_DIR} {SLOW_SCRIPT}", check=False)


def release_disks(host: Host) -> None:
    """After a failed create: wait for its hotplug scripts to end, and detach the loop
    devices that scripts killed at the timeout left on the disk files."""
    host.wait_for("hotplug scripts of the failed guest to end",
                  lambda: not host.run("pgrep -f xenhil-slow-block", check=False).ok,
                  host.timeouts["xl_destroy"], interval=2)
    host.run(f"for f in {DISK_DIR}/*.img; do losetup -j \"$f\" | cut -d: -f1 | "
             "xargs -r -n1 losetup -d; done", check=False)


@pytest.mark.bug("bsc#1120095")
def test_many_disks_hotplug_timeout(xen_host: Host, slow_disks: list[str],
                                    guests: GuestFactory) -> None:
    # (slow_disks before guests: its files go only after the guests are destroyed)
    assert DISKS * SLOW_SECONDS > LIBXL_HOTPLUG_TIMEOUT  # else this proves nothing
    xen_host.run(f"xenstore-rm {HOTPLUG_TIMEOUT_KEY}", check=False)
    with pytest.raises(GuestFailed) as without_key:
        guests(on=xen_host, name="hotplug-nokey", disks=slow_disks)
    assert HOTPLUG_TIMEOUT_MESSAGE in str(without_key.value), (
        f"without {HOTPLUG_TIMEOUT_KEY} the guest failed, but not by libxl's hotplug "
        f"timeout: {without_key.value}")
    release_disks(xen_host)

    xen_host.run(f"xenstore-write {HOTPLUG_TIMEOUT_KEY} {PER_DEVICE_SECONDS}")
    guest = guests(on=xen_host, name="hotplug-key", disks=slow_disks)
    seen = guest.run("ls /sys/block").stdout.split()
    expected = [f"xvd{chr(ord('b') + i)}" for i in range(DISKS)]
    assert set(expected) <= set(seen), f"the guest has {seen}, expected {expected}"
    assert guest.created_seconds is not None
    assert guest.created_seconds > LIBXL_HOTPLUG_TIMEOUT, (
        f"xl create took {guest.created_seconds:.0f} s: the hotplug did not take longer "
        f"than libxl's {LIBXL_HOTPLUG_TIMEOUT} s, the key was not what let it through")
