"""SUSE's migration knobs (libxc-sr patches): where `xl migrate`'s usage offers them,
one busy guest is migrated with each in turn and the knob's effect checked; elsewhere
the test skips once, naming the build and the knobs it lacks. The knobs come as one
patch series, so they are one scenario, its steps one per knob:

1. --max_iters N: at most N memory copy iterations before the final suspend and copy
   (source to destination).
2. --min_remaining N: the final copy starts once fewer than N pages are dirty; a high N
   ends the live phase after the first iteration (back to the source).
3. --abort_if_busy: with the guest dirtying more pages than --min_remaining allows, the
   migration is abandoned, not forced: the guest keeps running on the source.
"""

from __future__ import annotations

import allure
import pytest

from harness.guests.guest import GuestFactory
from harness.host import Host
from harness.migration import BUSY_GUEST, MoveRecord, migrate
from harness.migration_checks import (
    GuestState,
    MigrationFailed,
    check_kept_running,
    check_runs_only_on,
)
from harness.migration_hosts import usage_options

pytestmark = pytest.mark.area("migration")

KNOBS = ("max_iters", "min_remaining", "abort_if_busy")


def require_knobs(host: Host) -> None:
    usage = host.run("xl help migrate", check=False)
    missing = [k for k in KNOBS if k not in usage_options(usage.stdout + usage.stderr)]
    if missing:
        version = host.booted.xen_version if host.booted else "the installed build"
        pytest.skip(f"`xl help migrate` of Xen {version} on {host.name} offers no "
                    f"{', '.join('--' + k for k in missing)} (SUSE libxc-sr patches absent)")


def iterations(move: MoveRecord, knob: str) -> int:
    """The memory copy iterations `xl -vvv migrate` reported for a move with `knob`."""
    assert move.output is not None and move.output.iterations is not None, \
        f"{knob}: xl -vvv migrate reported no iteration count"
    return move.output.iterations


@pytest.fixture
def knob_pair(request: pytest.FixtureRequest,
              xen_host_pair: tuple[Host, Host]) -> tuple[Host, Host]:
    """live_pair, once the source's `xl migrate` offers the knobs: a build without them
    skips before the hosts are paired."""
    require_knobs(xen_host_pair[0])
    pair: tuple[Host, Host] = request.getfixturevalue("live_pair")
    return pair


def test_suse_migration_knobs(knob_pair: tuple[Host, Host], guest_type: str,
                              guests: GuestFactory) -> None:
    source, destination = knob_pair
    guest = guests(on=source, type=guest_type)
    guest.run(BUSY_GUEST)  # pages stay dirty: without a knob the live phase iterates on

    with allure.step(f"--max_iters 2: {source.name} -> {destination.name}"):
        move = migrate(guest, to=destination, options=["--max_iters", "2"])
        count = iterations(move, "--max_iters")
        assert count <= 2 + 1, f"--max_iters 2: {count} iterations (max 2 + final)"

    with allure.step(f"--min_remaining 1000000: {destination.name} -> {source.name}"):
        move = migrate(guest, to=source, options=["--min_remaining", "1000000"])
        count = iterations(move, "--min_remaining")
        assert count <= 2, (f"--min_remaining 1000000: {count} iterations: the live "
                            "phase did not end after the first")

    with allure.step(f"--abort_if_busy: {source.name} -> {destination.name}, abandoned"):
        before = GuestState.read(guest)
        with pytest.raises(MigrationFailed):
            migrate(guest, to=destination,
                    options=["--abort_if_busy", "--max_iters", "1", "--min_remaining", "1"])
        check_runs_only_on(guest, source, [destination])
        check_kept_running(guest, before, GuestState.read(guest), "the aborted migration")
