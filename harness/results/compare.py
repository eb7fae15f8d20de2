"""A run against its baseline: one label for every test that did not pass, the
figures against their history, and a verdict a push gate can use.

Each test is judged on its first try; a retest (attempt 2, --retest-regressions)
only decides FLAKY. The labels of a failed test, the first that applies:

- KNOWN: a known-issues entry matches (the bug link and reason come with it). An
  expired entry no longer matches; the label then says so, and so does `expired`.
- FLAKY: its retest passed.
- REGRESSION: it passed in the baseline.
- NEVER PASSED: it never passed on this lab (nor in the baseline). This beats LIKE
  BASELINE, as in osstest: "never worked here" says more than "failed last time too".
- LIKE BASELINE: it failed in the baseline too.
- REGRESSION "vs. last pass": it passed on this lab before, and the baseline cannot
  tell (it had the test skipped, broken or absent, or there is no baseline). osstest
  would call this "baseline untested" and let it through; here it blocks, or the
  next baseline, which has it failing, would make it LIKE BASELINE without anyone
  having looked at it. A KNOWN entry is the way to let it through.

Other statuses:
- broken: BROKEN, the lab and not the product. Never KNOWN and never a regression: a
  broken test did not test the product.
- skipped: no label (SKIPPED), unless it passed in the baseline: NOT RUN, so a test
  that stopped running is seen; not a regression, as nothing failed.
- passed: PASSED.
A test of the baseline that is absent from this run is NOT RUN too.

The verdict:
- "regressed" (exit 1) when any test is a REGRESSION, or, with `figures_gate`, a
  figure is flagged. A regression is reported even if the lab also broke.
- "broken" (exit 2) otherwise, when any test is BROKEN, or nothing ran: no result,
  or every test skipped.
- "passed" (exit 0) otherwise: KNOWN, FLAKY, NEVER PASSED and LIKE BASELINE
  failures are allowed. Flagged figures are warnings unless `figures_gate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from .figure_checks import FigureCheck, Tolerance, check_figures, first_attempts
from .known import KnownIssue
from .records import ResultRecord, RunRecord

VERDICTS = ("passed", "regressed", "broken")
EXIT_CODES = {"passed": 0, "regressed": 1, "broken": 2}


class LabelKind(StrEnum):
    """In the order a reader wants them: what blocks first."""

    REGRESSION = "REGRESSION"
    BROKEN = "BROKEN"
    FLAKY = "FLAKY"
    NEVER_PASSED = "NEVER PASSED"
    LIKE_BASELINE = "LIKE BASELINE"
    KNOWN = "KNOWN"
    NOT_RUN = "NOT RUN"
    PASSED = "PASSED"
    SKIPPED = "SKIPPED"


# Kinds that are no label at all: nothing to look at.
UNLABELLED = (LabelKind.PASSED, LabelKind.SKIPPED)


@dataclass(frozen=True)
class Label:
    kind: LabelKind
    detail: str = ""  # why this label, e.g. "passed in baseline 20260801-0200"
    bug_url: str = ""  # KNOWN: the entry's bug
    message: str = ""  # the first line of the failure or skip message


@dataclass(frozen=True)
class Comparison:
    run_id: str
    baseline_id: str | None
    labels: Mapping[str, Label]  # test id -> label: run order, then absent baseline tests
    figures: tuple[FigureCheck, ...]
    expired: tuple[KnownIssue, ...]  # expired entries that would have matched a failure
    verdict: str  # one of VERDICTS
    figures_gate: bool = False

    @property
    def figure_flags(self) -> list[FigureCheck]:
        return [check for check in self.figures if check.flagged]

    def with_kind(self, kind: LabelKind) -> list[str]:
        return [test_id for test_id, label in self.labels.items() if label.kind is kind]


def compare(current: RunRecord, baseline: RunRecord | None, *, known: list[KnownIssue],
            ever_passed: set[str], figure_history: list[RunRecord], today: date,
            tolerances: Mapping[str, Tolerance] | None = None,
            figures_gate: bool = False) -> Comparison:
    """`ever_passed`: the test ids that passed in earlier runs on this lab.
    `figure_history`: the runs whose figures make each figure's median (the current
    run is left out if it is among them). `tolerances`: see figure_checks."""
    results = first_attempts(current)
    retests = {result.test_id: result for result in current.results if result.attempt > 1}
    before = first_attempts(baseline) if baseline is not None else {}
    judge = _Judge(baseline.id if baseline is not None else None, before, known,
                   ever_passed, today)
    labels = {test_id: judge.label(result, retests.get(test_id))
              for test_id, result in results.items()}
    for test_id, result in before.items():
        if test_id not in results:
            labels[test_id] = Label(LabelKind.NOT_RUN, f"not in this run; "
                                    f"{result.status} in baseline {judge.baseline_id}")
    figures = tuple(check_figures(
        results.values(), [run for run in figure_history if run.id != current.id],
        tolerances))
    kinds = {label.kind for label in labels.values()}
    ran = any(result.status != "skipped" for result in results.values())
    if LabelKind.REGRESSION in kinds or (figures_gate and any(f.flagged for f in figures)):
        verdict = "regressed"
    elif LabelKind.BROKEN in kinds or not ran:
        verdict = "broken"
    else:
        verdict = "passed"
    return Comparison(run_id=current.id, baseline_id=judge.baseline_id, labels=labels,
                      figures=figures, expired=tuple(judge.expired), verdict=verdict,
                      figures_gate=figures_gate)


def exit_code(verdict: str) -> int:
    """0: no regression; 1: regressions; 2: the lab was broken, or nothing ran."""
    if verdict not in EXIT_CODES:
        raise ValueError(f"unknown verdict {verdict!r} (known: {', '.join(VERDICTS)})")
    return EXIT_CODES[verdict]


def regressions_to_retest(comparison: Comparison) -> list[str]:
    """The tests --retest-regressions runs once more at the end of the run."""
    return comparison.with_kind(LabelKind.REGRESSION)


class _Judge:
    """Labels one result at a time, remembering the expired entries it met."""

    def __init__(self, baseline_id: str | None, before: Mapping[str, ResultRecord],
                 known: list[KnownIssue], ever_passed: set[str], today: date) -> None:
        self.baseline_id = baseline_id
        self.before = before
        self.known = known
        self.ever_passed = ever_passed
        self.today = today
        self.expired: list[KnownIssue] = []

    def label(self, result: ResultRecord, retest: ResultRecord | None) -> Label:
        message = result.message.strip().partition("\n")[0]
        in_baseline = self.before.get(result.test_id)
        if result.status == "passed":
            return Label(LabelKind.PASSED)
        if result.status == "broken":
            return Label(LabelKind.BROKEN, "the lab, not the product", message=message)
        if result.status == "skipped":
            if in_baseline is not None and in_baseline.status == "passed":
                return Label(LabelKind.NOT_RUN, f"skipped; passed in baseline "
                             f"{self.baseline_id}", message=message)
            return Label(LabelKind.SKIPPED, message=message)
        if result.status != "failed":
            raise ValueError(f"{result.test_id}: unknown status {result.status!r}")
        return self._failure(result, retest, in_baseline, message)

    def _failure(self, result: ResultRecord, retest: ResultRecord | None,
                 in_baseline: ResultRecord | None, message: str) -> Label:
        applying = [entry for entry in self.known if entry.applies_to(result)]
        for entry in applying:
            if not entry.expired(self.today):
                return Label(LabelKind.KNOWN, f"{entry.bug}: {entry.reason}",
                             bug_url=entry.bug_url, message=message)
        # Every entry left applies but has expired.
        self.expired.extend(entry for entry in applying if entry not in self.expired)
        notes = "".join(f"; known issue {entry.bug} expired on {entry.expires}"
                        for entry in applying)
        if retest is not None:
            if retest.status == "passed":
                return Label(LabelKind.FLAKY, "passed on retest" + notes, message=message)
            notes += f"; {retest.status} on retest"
        baseline_status = in_baseline.status if in_baseline is not None else None
        if baseline_status == "passed":
            return Label(LabelKind.REGRESSION, f"passed in baseline {self.baseline_id}"
                         + notes, message=message)
        if result.test_id not in self.ever_passed:
            return Label(LabelKind.NEVER_PASSED, "never passed on this lab" + notes,
                         message=message)
        if baseline_status == "failed":
            return Label(LabelKind.LIKE_BASELINE, f"failed in baseline {self.baseline_id}"
                         " too" + notes, message=message)
        untested = ("no baseline" if self.baseline_id is None else
                    f"{baseline_status or 'not run'} in baseline {self.baseline_id}")
        return Label(LabelKind.REGRESSION, f"vs. last pass on this lab ({untested})"
                     + notes, message=message)
