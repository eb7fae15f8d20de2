"""SUSE's migration knobs (libxc-sr patches): where `xl migrate`'s usage offers them,
each is exercised and its effect checked; elsewhere the test skips, naming the build.

- --max_iters N: at most N memory copy iterations before the final suspend and copy.
- --min_remaining N: the final copy starts once fewer than N pages are dirty; a high N
  ends the live phase after the first iteration.
- --abort_if_busy: with a guest dirtying more pages than --min_remaining allows, the
  migration is abandoned, not forced: the guest keeps running on the source.
"""

from __future__ import annotations

import pytest

from harness.guests.guest import GuestFactory
from harness.host import Host
from harness.migration import BUSY_GUEST, migrate
from harness.migration_checks import (
    GuestState,
    MigrationFailed,
    check_kept_running,
    check_runs_only_on,
)
from harness.migration_hosts import usage_options

pytestmark = pytest.mark.area("migration")


def require_knobs(host: Host, *knobs: str) -> None:
    usage = host.run("xl help migrate", check=False)
    missing = [k for k in knobs if k not in usage_options(usage.stdout + usage.stderr)]
    if missing:
        version = host.booted.xen_version if host.booted else "the installed build"
        pytest.skip(f"`xl help migrate` of Xen {version} on {host.name} offers no "
                    f"{', '.join('--' + k for k in missing)} (SUSE libxc-sr patches absent)")


@pytest.fixture
def knob_pair(request: pytest.FixtureRequest,
              xen_host_pair: tuple[Host, Host]) -> tuple[Host, Host]:
    """live_pair, once the source's `xl migrate` offers the test's knobs (its `knobs`
    mark): a build without them skips before the hosts are paired."""
    require_knobs(xen_host_pair[0], *request.node.get_closest_marker("knobs").args)
    pair: tuple[Host, Host] = request.getfixturevalue("live_pair")
    return pair


@pytest.mark.knobs("max_iters")
def test_max_iters_limits_iterations(knob_pair: tuple[Host, Host], guest_type: str,
                                     guests: GuestFactory) -> None:
    source, destination = knob_pair
    guest = guests(on=source, type=guest_type)
    guest.run(BUSY_GUEST)  # pages stay dirty: without the limit it would iterate on
    move = migrate(guest, to=destination, options=["--max_iters", "2"])
    assert move.output is not None and move.output.iterations is not None, \
        "xl -vvv migrate reported no iteration count"
    assert move.output.iterations <= 2 + 1, f"{move.output.iterations} iterations (max 2 + final)"


@pytest.mark.knobs("min_remaining")
def test_min_remaining_ends_live_phase(knob_pair: tuple[Host, Host], guest_type: str,
                                       guests: GuestFactory) -> None:
    source, destination = knob_pair
    guest = guests(on=source, type=guest_type)
    move = migrate(guest, to=destination, options=["--min_remaining", "1000000"])
    assert move.output is not None and move.output.iterations is not None, \
        "xl -vvv migrate reported no iteration count"
    assert move.output.iterations <= 2, \
        f"{move.output.iterations} iterations: min_remaining did not end the live phase"


@pytest.mark.knobs("abort_if_busy", "max_iters", "min_remaining")
def test_abort_if_busy_keeps_guest_on_source(knob_pair: tuple[Host, Host], guest_type: str,
                                             guests: GuestFactory) -> None:
    source, destination = knob_pair
    guest = guests(on=source, type=guest_type)
    guest.run(BUSY_GUEST)
    before = GuestState.read(guest)
    with pytest.raises(MigrationFailed):
        migrate(guest, to=destination,
                options=["--abort_if_busy", "--max_iters", "1", "--min_remaining", "1"])
    check_runs_only_on(guest, source, [destination])
    check_kept_running(guest, before, GuestState.read(guest), "the aborted migration")
