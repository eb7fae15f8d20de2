"""`xenhil reproduce` and `xenhil bisect` on the lab: each run's result printed as it
ends, with a bar of the runs done, the time spent and an estimate of the time left."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table

from ..lab import load_lab
from ..plugin import default_run_id
from ..sessions import interrupting_signals
from .bisect import Bisector, Confirm
from .lab_steps import LabStepRunner
from .page import write_page
from .reproduce import RunEvent, reproduce
from .series import SeriesBuild
from .steps import StepResult

_COLOURS = {"passed": "green", "failed": "red", "broken": "yellow", "skipped": "dim"}


def _clock(seconds: float) -> str:
    minutes, second = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{second:02d}"


def _status(result: StepResult) -> str:
    return f"[{_COLOURS.get(result.status, 'default')}]{result.status}[/]"


def _report_path(result: StepResult) -> str:
    if result.reports is None:
        return "(no reports)"
    index = result.reports / "index.html"
    return str(index if index.exists() else result.reports)


class ProgressPrinter:
    """Prints each run as it ends, then the bar. The bar is printed, not a live display:
    the runs' own pytest output goes to the same terminal in between."""

    def __init__(self, console: Console, unit: str) -> None:
        self.console = console
        self.unit = unit
        self.started = time.monotonic()

    def __call__(self, event: RunEvent) -> None:
        result = event.result
        self.console.print(f"{escape(event.label)}: {_status(result)} "
                           f"{escape(result.run_id)} ({result.duration_s:.0f} s) "
                           f"{escape(_report_path(result))}", highlight=False)
        if result.status != "passed" and result.message.strip():
            self.console.print(f"  {escape(result.message.strip().splitlines()[0][:200])}",
                               highlight=False)
        spent = time.monotonic() - self.started
        left = spent / event.done * max(event.planned - event.done, 0)
        bar = Table.grid(padding=(0, 1))
        bar.add_row(ProgressBar(total=event.planned, completed=event.done, width=30),
                    f"{event.done}/{event.planned} {self.unit}",
                    f"spent {_clock(spent)}", f"left ~{_clock(left)}")
        self.console.print(bar)


def run_reproduce(lab_path: Path, test_id: str, *, host: str, build: Path | None,
                  count: int, until: str | None, database: str | None,
                  console: Console, fresh_boot: bool = False) -> int:
    runner = LabStepRunner(lab_path, kind="repro", database=database,
                           reuse_booted=not fresh_boot)
    hunt_id = f"repro-{default_run_id()}"
    console.print(f"reproduce {escape(test_id)} on {escape(host)}, build "
                  f"{escape(str(build) if build else 'the lab default')}: {count} "
                  f"attempt(s){f', until it {until}s' if until else ''}", highlight=False)
    with interrupting_signals(), runner:
        outcome = reproduce(runner, test_id, host, build, count, until=until,
                            hunt_id=hunt_id, on_run=ProgressPrinter(console, "attempts"))
    tally = ", ".join(f"{sum(r.status == status for r in outcome.attempts)} {status}"
                      for status in ("passed", "failed", "broken", "skipped"))
    console.rule("xen-hil reproduce " + ("interrupted" if outcome.signum else "finished"))
    console.print(f"failed  : {outcome.rate} ({tally})")
    for number, result in enumerate(outcome.attempts, 1):
        console.print(f"  {number:2d} {_status(result)} {escape(_report_path(result))}",
                      highlight=False)
    console.print(f"exit    : {outcome.exit_code}")
    return outcome.exit_code


def run_bisect(lab_path: Path, test_id: str, *, host: str, series: list[SeriesBuild],
               confirm: Confirm, runs_per_step: int, database: str | None,
               console: Console) -> int:
    runner = LabStepRunner(lab_path, kind="bisect", database=database)
    hunt_id = f"bisect-{default_run_id()}"
    out = load_lab(lab_path, check_files=False).reports_dir / hunt_id
    printer = ProgressPrinter(console, "runs (estimate)")

    def on_run(event: RunEvent) -> None:
        printer(event)
        write_page(bisector.outcome, out)

    bisector = Bisector(runner, test_id, host, series, confirm=confirm,
                        runs_per_step=runs_per_step, hunt_id=hunt_id, on_run=on_run)
    console.print(f"bisect {escape(test_id)} on {escape(host)} over {len(series)} builds: "
                  f"{escape(', '.join(build.name for build in series))}; page: "
                  f"{out / 'index.html'}", highlight=False)
    with interrupting_signals(), runner:
        outcome = bisector.bisect()
        page = write_page(outcome, out)
    console.rule("xen-hil bisect " + ("interrupted" if outcome.signum else "finished"))
    console.print(f"verdict   : {escape(outcome.verdict or '')} (exit {outcome.exit_code})"
                  + (f": {escape(outcome.reason)}" if outcome.reason else ""), highlight=False)
    console.print(f"first bad : {escape(outcome.first_bad.name if outcome.first_bad else '-')}")
    console.print(f"last good : {escape(outcome.last_good.name if outcome.last_good else '-')}")
    if outcome.skipped:
        console.print("skipped   : "
                      f"{escape(', '.join(build.name for build in outcome.skipped))}")
    failure = outcome.last_failure
    if failure is not None:
        console.print(f"evidence  : {escape(_report_path(failure))} (the last failure)",
                      highlight=False)
    console.print(f"page      : {page}")
    console.print(f"summary   : {out / 'summary.json'}")
    return outcome.exit_code
