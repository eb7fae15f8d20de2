"""Live migration between two hosts and back: A -> B -> A, a diskless guest and one
whose disk is on storage both hosts see (NBD). After each hop the guest runs on the
destination only, kept running (counter, uptime, boot id), answers ping from both
dom0s (bridged across the host-to-host link), and its disk data checks out. Downtime
and transfer figures of each hop are recorded. Each runs for every guest type the build
can live-migrate (PVH; PV where the hypervisor has shadow paging). An HVM guest is
saved and restored, then takes the diskless round trip, its device model's state moving
with it."""

from __future__ import annotations

import pytest

from harness.guests.guest import Guest, GuestFactory
from harness.host import Host
from harness.migration import DiskPattern, attach_disk, migrate, restore, save
from harness.migration_checks import GuestState, check_kept_running, check_runs_only_on
from harness.nbd import SharedDisk

pytestmark = pytest.mark.area("migration")


def assert_network(guest: Guest, hosts: tuple[Host, ...]) -> None:
    for host in hosts:
        assert host.run(f"ping -c 3 -W 2 {guest.ip}", check=False).ok, \
            f"{host.name} gets no ping reply from guest {guest.name} on {guest.host.name}"


def there_and_back(guest: Guest, pair: tuple[Host, Host], start: GuestState) -> None:
    """A -> B -> A; the guest kept running since `start` all along."""
    a, b = pair
    migrate(guest, to=b, since=start)
    assert_network(guest, pair)
    migrate(guest, to=a, since=start)
    assert_network(guest, pair)


def test_live_migration_round_trip(live_pair: tuple[Host, Host], guest_type: str,
                                   guests: GuestFactory) -> None:
    guest = guests(on=live_pair[0], type=guest_type)
    there_and_back(guest, live_pair, GuestState.read(guest))


@pytest.mark.guest_types("hvm")  # apart: profiles pick it or not (a minute more per boot)
def test_hvm_save_restore_and_live_migration_round_trip(
        live_pair: tuple[Host, Host], guest_type: str, guests: GuestFactory) -> None:
    """osstest's sequence for an HVM guest, one guest through it (it boots for a minute
    under TCG): saved and restored, its device model's state with it; then there and
    back."""
    a = live_pair[0]
    guest = guests(on=a, type=guest_type)
    start = GuestState.read(guest)
    path, _ = save(guest)
    assert not guest.listed(), "the saved guest is still in xl list"
    restore(guest, path)
    a.run(f"rm -f {path}")
    check_runs_only_on(guest, a, [])
    check_kept_running(guest, start, GuestState.read(guest), "save/restore")
    there_and_back(guest, live_pair, start)


def test_live_migration_round_trip_with_shared_disk(
        live_pair: tuple[Host, Host], guest_type: str, shared_disk: SharedDisk,
        guests: GuestFactory) -> None:
    a, b = live_pair
    guest = guests(on=a, type=guest_type)
    assert shared_disk.device is not None
    disk = DiskPattern(guest, attach_disk(guest, shared_disk.device))
    disk.write()
    migrate(guest, to=b)
    disk.check(f"on {b.name}")
    disk.write()
    migrate(guest, to=a)
    disk.check(f"back on {a.name}")
    disk.write()
    disk.check(f"on {a.name}, written after the round trip")
    assert_network(guest, live_pair)
