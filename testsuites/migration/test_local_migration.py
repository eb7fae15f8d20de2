"""Local migration: `xl migrate` of a guest to its own host, repeated (osstest's
guest-localmigrate x10). After each one the guest runs once on the host, answers, and
kept running; the figures of every migration are recorded."""

from __future__ import annotations

import allure
import pytest

from harness.guests.guest import GuestFactory
from harness.host import Host
from harness.migration import migrate

pytestmark = pytest.mark.area("migration")

LOCAL_MIGRATIONS = 10


def test_local_migration_repeated(live_pair: tuple[Host, Host], guests: GuestFactory) -> None:
    host, _ = live_pair
    guest = guests(on=host)
    for n in range(1, LOCAL_MIGRATIONS + 1):
        with allure.step(f"local migration {n} of {LOCAL_MIGRATIONS}"):
            migrate(guest, to=host)
