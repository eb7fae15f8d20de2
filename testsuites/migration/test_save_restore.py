"""Save/restore: the guest is saved to a file on dom0 (gone, not answering), restored
from it (answering again), and kept running: its counter continues, its uptime and boot
id are those of before. Twice in a row. Then a checkpoint (`xl save -c`): the guest runs
on, and a restore from the checkpoint brings back the guest as it was at that moment.
(An HVM guest is saved and restored in test_live_migration.py, before it migrates.)"""

from __future__ import annotations

import pytest

from harness.guests.guest import GuestFactory
from harness.host import Host
from harness.migration import restore, save
from harness.migration_checks import (
    GuestState,
    check_counting,
    check_kept_running,
    check_runs_only_on,
)
from harness.migration_hosts import usage_options

pytestmark = pytest.mark.area("migration")


def test_save_restore_twice(xen_host: Host, guests: GuestFactory) -> None:
    host = xen_host
    guest = guests(on=host)
    for round_ in (1, 2):
        before = GuestState.read(guest)
        path, _ = save(guest)
        assert not guest.listed(), f"save #{round_}: the saved guest is still in xl list"
        assert not guest.answers_ping(count=1), f"save #{round_}: the saved guest answers ping"
        restore(guest, path)
        check_runs_only_on(guest, host, [])
        after = GuestState.read(guest)
        check_kept_running(guest, before, after, f"save/restore #{round_}")
        check_counting(guest, after)
        host.run(f"rm -f {path}")


def test_checkpoint_save(xen_host: Host, guests: GuestFactory) -> None:
    host = xen_host
    usage = host.run("xl help save", check=False)
    if "c" not in usage_options(usage.stdout + usage.stderr):
        pytest.skip(f"`xl help save` on {host.name} offers no -c (checkpoint)")
    guest = guests(on=host)
    at_checkpoint = GuestState.read(guest)
    path, _ = save(guest, checkpoint=True)
    check_runs_only_on(guest, host, [])  # running on, not paused
    check_kept_running(guest, at_checkpoint, GuestState.read(guest), "checkpoint save")
    guest.run("touch /run/after-checkpoint")

    guest.destroy()
    restore(guest, path)
    restored = GuestState.read(guest)
    check_kept_running(guest, at_checkpoint, restored, "restore of the checkpoint")
    assert not guest.run("test -e /run/after-checkpoint", check=False).ok, \
        "the restored guest has a file made after the checkpoint: not the checkpoint's state"
    check_counting(guest, restored)
    host.run(f"rm -f {path}")
