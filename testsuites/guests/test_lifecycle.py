"""Guests: the life of a guest on the build under test.

Procedure (once per host): create a PV guest (the harness's test guest: a Debian
kernel and a busybox initramfs, on the bridge xenbr0), see it come up, talk to it, then
end it both ways, `xl shutdown -w` and `xl destroy`; each time it must be gone from
`xl list`. Then a stop/start loop, the same guest booted as PVH, and as HVM where the
build has the device model (the kernel loaded by the guest's firmware, the console on
its emulated serial port). Every guest's console log is attached to the report, and
anything a test leaves on the host afterwards (domain, vif, xenstore path, loop
device, file in /var/run/xen or /tmp) fails it as a leak.
"""

from __future__ import annotations

import time

import pytest

from harness.figures import Figures
from harness.guests.dom0 import device_model_missing
from harness.guests.guest import GuestFactory
from harness.guests.image import READY_MARKER, STOP_MARKER
from harness.host import Host
from harness.xl import parse_xl_info

pytestmark = pytest.mark.area("guests")

STOP_START_CYCLES = 3


def test_pv_guest_comes_up(xen_host: Host, guests: GuestFactory, figures: Figures) -> None:
    guest = guests(on=xen_host)  # xl create, then wait for its ready marker and SSH
    figures.add("xl create", guest.created_seconds or 0, "s")
    figures.add("xl create to SSH", guest.up_seconds or 0, "s")
    assert guest.listed(), "xl list does not show the guest"
    console = guest.console_log()
    assert "Linux version" in console, "the guest console was not captured from its start"
    assert f"{READY_MARKER} {guest.name}" in console
    assert guest.answers_ping(), f"dom0 gets no ping reply from the guest at {guest.ip}"
    assert guest.run("hostname").stdout.strip() == guest.name
    assert guest.run("cat /sys/class/net/eth0/address").stdout.strip() == guest.mac
    assert guest.counter() > 0, "the guest's seconds counter does not run"


def test_pv_guest_shutdown_then_destroy(xen_host: Host, guests: GuestFactory) -> None:
    guest = guests(on=xen_host)
    guest.shutdown()  # xl shutdown -w: the guest powers itself off
    assert not guest.listed(), "the guest is still in xl list after its shutdown"
    assert STOP_MARKER in guest.console_log(), "the guest did not power off in order"
    assert not guest.answers_ping(count=1), "the guest still answers ping"

    again = guests(on=xen_host, name=guest.name)  # the name is free again
    again.destroy()  # xl destroy: ended at once
    assert not again.listed(), "the guest is still in xl list after xl destroy"


def test_pv_guest_stop_start_loop(xen_host: Host, guests: GuestFactory,
                                  figures: Figures) -> None:
    name = None
    for cycle in range(1, STOP_START_CYCLES + 1):
        started = time.monotonic()
        guest = guests(on=xen_host, name=name)
        name = guest.name
        assert guest.counter() > 0, f"cycle {cycle}: the guest's counter does not run"
        guest.shutdown()
        assert not guest.listed(), f"cycle {cycle}: still in xl list after shutdown"
        figures.add(f"cycle {cycle} create to gone", time.monotonic() - started, "s")


def skip_without_hvm_containers(host: Host) -> None:
    """PVH and HVM guests need HVM support and a way to page for them: hardware
    assisted paging (HAP) or shadow paging (a build option of Xen)."""
    caps = parse_xl_info(host.run("xl info").stdout).get("virt_caps", "").split()
    if "hvm" not in caps:
        pytest.skip(f"{host.name}: no hvm in xl info virt_caps ({' '.join(caps)})")
    if "hap" not in caps and "shadow" not in caps:
        pytest.skip(f"{host.name}: neither hap nor shadow in xl info virt_caps "
                    f"({' '.join(caps)}): no HAP on this CPU, and this Xen has no "
                    "shadow paging")


def test_pvh_guest_comes_up(xen_host: Host, guests: GuestFactory, figures: Figures) -> None:
    skip_without_hvm_containers(xen_host)
    guest = guests(on=xen_host, type="pvh")
    figures.add("xl create to SSH", guest.up_seconds or 0, "s")
    listing = xen_host.run(f"xl list -l {guest.name}").stdout
    assert '"type": "pvh"' in listing, "xl list -l does not show a PVH domain"
    assert guest.run("cat /sys/hypervisor/guest_type").stdout.strip() == "PVH"
    assert guest.answers_ping()
    guest.shutdown()


def test_hvm_guest_lifecycle(xen_host: Host, guests: GuestFactory, figures: Figures) -> None:
    """An HVM guest: hvmloader and SeaBIOS load the test kernel, its console is the
    emulated serial port (a file the device model writes), its network the vif through
    PV drivers. `xl shutdown -w` ends it, and its device model with it."""
    skip_without_hvm_containers(xen_host)
    if (missing := device_model_missing(xen_host)) is not None:
        pytest.skip(missing)
    guest = guests(on=xen_host, type="hvm")
    figures.add("xl create to SSH", guest.up_seconds or 0, "s")
    domid = guest.domid()
    assert '"type": "hvm"' in xen_host.run(f"xl list -l {guest.name}").stdout, \
        "xl list -l does not show an HVM domain"
    assert guest.run("cat /sys/hypervisor/guest_type").stdout.strip() == "HVM"
    # hvmloader and SeaBIOS log to Xen's console (guest_loglvl=all); the option ROM
    # that loads a kernel given to the device model is what SeaBIOS booted from
    firmware = "\n".join(line for line in xen_host.run("xl dmesg").stdout.splitlines()
                         if line.startswith(f"(d{domid}) "))
    assert "Invoking SeaBIOS" in firmware and "Booting from ROM" in firmware, \
        f"xl dmesg shows no firmware boot of domain {domid}:\n{firmware[-2000:]}"
    assert device_model_running(xen_host, domid), f"no device model for domain {domid}"

    console = guest.console_log()
    assert f"{READY_MARKER} {guest.name}" in console, \
        "the emulated serial port's file lacks the guest's ready marker"
    # netfront took the vif (the emulated NIC is unplugged), and it reaches dom0
    driver = guest.run("basename $(readlink /sys/class/net/eth0/device/driver)").stdout
    assert driver.strip() == "vif", f"eth0 is driven by {driver.strip()}, not netfront"
    assert guest.run("cat /sys/class/net/eth0/address").stdout.strip() == guest.mac
    assert guest.answers_ping(), f"dom0 gets no ping reply from the guest at {guest.ip}"

    guest.shutdown()
    assert not guest.listed(), "the guest is still in xl list after its shutdown"
    assert STOP_MARKER in guest.console_log(), "the guest did not power off in order"
    assert not device_model_running(xen_host, domid), \
        f"the device model of domain {domid} outlived its guest"


def device_model_running(host: Host, domid: int) -> bool:
    """A device model process serves domain `domid` (its command line names it; the
    bracket keeps pgrep from matching the shell that runs it)."""
    return host.run(f"pgrep -f -- '[-]xen-domid {int(domid)} '", check=False).ok
