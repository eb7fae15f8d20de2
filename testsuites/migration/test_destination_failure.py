"""Failure handling: the destination is powered off (IPMI) while the guest's memory is
on its way. The product's promise: `xl migrate` reports the failure and the guest still
runs on the source, kept running. The destination is powered back on into the build
for the tests after this one."""

from __future__ import annotations

import pytest

from harness.guests.guest import GuestFactory, domain_names
from harness.host import Host
from harness.migration import BackgroundMigration, MoveRecord, record, wait_answers
from harness.migration_checks import (
    GuestState,
    MigrationFailed,
    check_counting,
    check_kept_running,
    check_runs_only_on,
)
from harness.migration_output import parse_migrate_output

pytestmark = pytest.mark.area("migration")


def test_destination_powered_off_mid_migration(live_pair: tuple[Host, Host], guest_type: str,
                                               guests: GuestFactory) -> None:
    source, destination = live_pair
    guest = guests(on=source, type=guest_type)
    before = GuestState.read(guest)
    migration = BackgroundMigration(guest, to=destination)
    migration.start()
    arriving = f"{guest.name}--incoming"
    destination.wait_for(f"{arriving} on {destination.name}",
                         lambda: arriving in domain_names(destination),
                         source.timeouts["xl_migrate"])
    destination.power_off()  # IPMI chassis power off, mid-transfer

    result = migration.wait()
    record(MoveRecord(f"migrate {source.name} -> {destination.name}, powered off", guest.name,
                      migration.seconds, parse_migrate_output(result.stderr + result.stdout)))
    if result.ok:
        raise MigrationFailed(f"`{migration.command}` reports success although "
                              f"{destination.name} was powered off during it")
    wait_answers(guest, "the failed migration")
    check_runs_only_on(guest, source, [])
    after = GuestState.read(guest)
    check_kept_running(guest, before, after, "the failed migration")
    check_counting(guest, after)

    destination.power_cycle_to_shell(expect_xen=True)  # back for the next tests
    assert guest.name not in domain_names(destination), \
        f"{destination.name} lists {guest.name} after its power cycle"
