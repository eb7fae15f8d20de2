"""Live migration between two hosts and back: A -> B -> A, a diskless guest and one
whose disk is on storage both hosts see (NBD). After each hop the guest runs on the
destination only, kept running (counter, uptime, boot id), answers ping from both
dom0s (bridged across the host-to-host link), and its disk data checks out. Downtime
and transfer figures of each hop are recorded. Each runs for every guest type the build
can live-migrate (PVH; PV where the hypervisor has shadow paging); the diskless round
trip also with an HVM guest, its device model's state moving with it."""

from __future__ import annotations

import pytest

from harness.guests.guest import Guest, GuestFactory
from harness.host import Host
from harness.migration import DiskPattern, attach_disk, migrate
from harness.migration_checks import GuestState
from harness.nbd import SharedDisk

pytestmark = pytest.mark.area("migration")


def assert_network(guest: Guest, hosts: tuple[Host, ...]) -> None:
    for host in hosts:
        assert host.run(f"ping -c 3 -W 2 {guest.ip}", check=False).ok, \
            f"{host.name} gets no ping reply from guest {guest.name} on {guest.host.name}"


def round_trip(pair: tuple[Host, Host], guest_type: str, guests: GuestFactory) -> None:
    a, b = pair
    guest = guests(on=a, type=guest_type)
    start = GuestState.read(guest)
    migrate(guest, to=b)
    assert_network(guest, pair)
    migrate(guest, to=a, since=start)  # kept running over the whole round trip
    assert_network(guest, pair)


def test_live_migration_round_trip(live_pair: tuple[Host, Host], guest_type: str,
                                   guests: GuestFactory) -> None:
    round_trip(live_pair, guest_type, guests)


@pytest.mark.guest_types("hvm")  # apart: profiles pick it or not (a minute more per boot)
def test_hvm_live_migration_round_trip(live_pair: tuple[Host, Host], guest_type: str,
                                       guests: GuestFactory) -> None:
    round_trip(live_pair, guest_type, guests)


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
