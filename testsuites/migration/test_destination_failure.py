"""Failure handling: the destination is powered off (IPMI) while the guest's memory is
on its way. The product's promise: `xl migrate` reports the failure and the guest still
runs on the source, kept running.

The destination is left off, and the test runs last in its session (`leaves_host_off`):
its boot back into the build (a minute or more under TCG) is paid only by a later test
that needs it, which power cycles it first (BootedHosts, host_pair). Its half of the
pairing stays on its disk until the next pairing replaces it; the source's half, the
private key, is removed as usual."""

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

pytestmark = [pytest.mark.area("migration"), pytest.mark.leaves_host_off]


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
