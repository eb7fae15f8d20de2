"""The StepRunner of the lab: each run is a `xenhil run` of the one test on the one host
(harness.runner.run with `tests`), recorded in the results database as kind repro or
bisect, with its own reports directory."""

from __future__ import annotations

import re
import time
from pathlib import Path

from ..errors import ConfigError, InfrastructureError
from ..lab import Lab, load_lab
from ..results.db import ResultsDB
from ..results.records import ResultRecord, RunRecord
from ..runner import Recording, run
from .steps import Interrupted, StepResult, signal_of

# The order in which one status outweighs another, for a test id that ran as several
# tests (a parameter other than the host).
_WORST_FIRST = ("failed", "broken", "passed", "skipped")
_PARAMETER = re.compile(r"^(?P<test>.+::[^\[]+)\[(?P<param>[^\]]*)\]$")


def node_id(test_id: str, lab: Lab) -> str:
    """The test to run for `test_id` as the results database names it: a parameter
    that is a host of the lab is left out, since the run's host decides it."""
    match = _PARAMETER.match(test_id)
    if match and match["param"] in lab.hosts:
        return match["test"]
    return test_id


def last_failed_host(db: ResultsDB, test_id: str, lab: Lab) -> str | None:
    """The host of the test's newest failure in the database (with or without the
    host as its parameter), if it has one on this lab."""
    test = node_id(test_id, lab)
    failures: list[tuple[RunRecord, ResultRecord]] = []
    for candidate in (test, *(f"{test}[{name}]" for name in lab.hosts)):
        failures += [(entry, result) for entry, result in db.history(candidate, limit=50)
                     if result.status == "failed" and entry.lab == lab.name and result.hosts]
    if not failures:
        return None
    newest = max(failures, key=lambda found: (found[0].started is not None,
                                              found[0].started, found[0].id))
    return newest[1].hosts[0]


def step_result(run_id: str, reports: Path, results: tuple[ResultRecord, ...],
                duration_s: float) -> StepResult | None:
    """The test's worst status in the run, with its message and evidence; None if the
    run recorded no result."""
    first = [result for result in results if result.attempt == 1]
    if not first:
        return None
    worst = min(first, key=lambda result: _WORST_FIRST.index(result.status))
    hosts = tuple(dict.fromkeys(host for result in first for host in result.hosts))
    return StepResult(worst.status, run_id, reports, worst.message, duration_s, hosts,
                      worst.evidence)


class LabStepRunner:
    """Runs on the lab, one after another. The virtual lab stays up between them and is
    stopped by close() if the first run started it. With `reuse_booted`, a run finds
    the host still running the build of the run before and uses it as it is (a host
    that crashed, or runs another build, is installed and booted as usual)."""

    def __init__(self, lab_path: Path, *, kind: str, database: str | None = None,
                 reuse_booted: bool = False) -> None:
        self.lab_path = lab_path
        self.lab = load_lab(lab_path, check_files=False)
        self.kind = kind
        self.database = database
        self.reuse_booted = reuse_booted
        self.vlab_was_up: bool | None = None  # known at the first run

    def __enter__(self) -> LabStepRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the virtual lab if this runner's runs started it."""
        if "vlab" in self.lab.options and self.vlab_was_up is False:
            from ..vlab import control

            control.down(self.lab)
            control.clear_owner(self.lab)

    def run(self, test_id: str, build: Path | None, host: str,
            attempt_label: str) -> StepResult:
        started = time.monotonic()
        reports = self.lab.reports_dir / attempt_label
        if self.vlab_was_up is None and "vlab" in self.lab.options:
            from ..vlab import control

            self.vlab_was_up = any(control.host_status(host).bmc_running
                                   for host in control.virtual_hosts(self.lab))
        try:
            outcome = run(self.lab_path, tests=[node_id(test_id, self.lab)],
                          build=str(build) if build is not None else None, hosts=[host],
                          run_id=attempt_label, keep_up=True,
                          extra_pytest_args=["--reuse-booted"] if self.reuse_booted else [],
                          recording=Recording(kind=self.kind, database=self.database))
        except InfrastructureError as error:  # the lab, before the test could start
            return StepResult("broken", attempt_label, reports if reports.is_dir() else None,
                              str(error), time.monotonic() - started, (host,))
        except KeyboardInterrupt as interrupt:  # before or after pytest ran
            raise Interrupted(signal_of(interrupt)) from None
        result = step_result(attempt_label, outcome.reports, outcome.run.results,
                             time.monotonic() - started)
        if outcome.exit_code > 128:
            raise Interrupted(outcome.exit_code - 128, result)
        if result is None:
            raise ConfigError(f"{test_id}: the run {attempt_label} has no result of it: the "
                              f"test id selects no test on {host} (pytest's output above "
                              "says why); `xenhil history` and `xenhil compare` print test "
                              "ids")
        return result
