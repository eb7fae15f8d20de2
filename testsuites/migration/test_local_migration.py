"""Local migration: `xl migrate` of a guest to its own host, repeated (osstest's
guest-localmigrate x10; the lab file's xenhil.local_migrations). After each one the
guest runs once on the host, answers, and kept running; the figures of every migration
are recorded."""

from __future__ import annotations

import allure
import pytest

from harness.guests.guest import GuestFactory
from harness.host import Host
from harness.migration import migrate

pytestmark = pytest.mark.area("migration")


def test_local_migration_repeated(live_host: Host, guest_type: str,
                                  guests: GuestFactory) -> None:
    host = live_host
    guest = guests(on=host, type=guest_type)
    repeats = host.lab.local_migrations
    for n in range(1, repeats + 1):
        with allure.step(f"local migration {n} of {repeats}"):
            migrate(guest, to=host)
