"""The comparison rules, on recorded runs: every label and which one wins, figures
against their history, the verdict and its exit code, and the terminal table."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date
from typing import Any

import pytest

from harness.results.compare import (
    Comparison,
    Label,
    LabelKind,
    compare,
    exit_code,
    regressions_to_retest,
)
from harness.results.figure_checks import Tolerance
from harness.results.known import KnownIssue
from harness.results.records import Figure, ResultRecord, RunRecord
from harness.results.render import css_class, render_text, short_text

TODAY = date(2026, 8, 1)
TEST = "testsuites/networking/test_bridged.py::test_bridged[pv]"
KNOWN = KnownIssue(test="testsuites/networking/*", bug="bsc#1234567", reason="vif-bridge",
                   message=re.compile("vif-bridge"), hosts=("host-a",))
EXPIRED = replace(KNOWN, expires=TODAY)
OTHER_HOST = replace(KNOWN, hosts=("host-b",))
OTHER_MESSAGE = replace(KNOWN, message=re.compile("vif-route"))


def result(status: str, test_id: str = TEST, **fields: Any) -> ResultRecord:
    fields.setdefault("hosts", ("host-a",))
    fields.setdefault("message", "" if status == "passed" else "HotplugError: vif-bridge")
    return ResultRecord(test_id, status, **fields)


def run(run_id: str, *results: ResultRecord) -> RunRecord:
    return RunRecord(run_id, profile="smoke", lab="vlab", kind="nightly", results=results)


FAILED, RETEST_PASSED = result("failed"), result("passed", attempt=2)
RETEST_FAILED = result("failed", attempt=2)


@pytest.mark.parametrize(("now", "before", "ever_passed", "known", "kind", "detail"), [
    # name: what happened now; status in baseline B (None: no baseline run at all)
    ([result("passed")], [result("failed")], False, [], LabelKind.PASSED, ""),
    ([FAILED], [result("passed")], True, [], LabelKind.REGRESSION, "passed in baseline B"),
    ([FAILED], [result("failed")], True, [], LabelKind.LIKE_BASELINE,
     "failed in baseline B too"),
    ([FAILED], [result("failed")], False, [], LabelKind.NEVER_PASSED,
     "never passed on this lab"),
    ([FAILED], None, False, [], LabelKind.NEVER_PASSED, "never passed on this lab"),
    ([FAILED], [result("broken")], False, [], LabelKind.NEVER_PASSED,
     "never passed on this lab"),
    # Passed here before, but the baseline cannot tell: a regression vs. the last pass.
    ([FAILED], None, True, [], LabelKind.REGRESSION,
     "vs. last pass on this lab (no baseline)"),
    ([FAILED], [result("skipped")], True, [], LabelKind.REGRESSION,
     "vs. last pass on this lab (skipped in baseline B)"),
    ([FAILED], [result("broken")], True, [], LabelKind.REGRESSION,
     "vs. last pass on this lab (broken in baseline B)"),
    ([FAILED], [], True, [], LabelKind.REGRESSION,
     "vs. last pass on this lab (not run in baseline B)"),
    ([FAILED, RETEST_PASSED], [result("passed")], True, [], LabelKind.FLAKY,
     "passed on retest"),
    ([FAILED, RETEST_PASSED], None, False, [], LabelKind.FLAKY, "passed on retest"),
    ([FAILED, RETEST_FAILED], [result("passed")], True, [], LabelKind.REGRESSION,
     "passed in baseline B; failed on retest"),
    ([FAILED], [result("passed")], True, [KNOWN], LabelKind.KNOWN,
     "bsc#1234567: vif-bridge"),
    ([FAILED, RETEST_PASSED], [result("passed")], True, [KNOWN], LabelKind.KNOWN,
     "bsc#1234567: vif-bridge"),
    ([FAILED], [result("failed")], False, [OTHER_HOST, KNOWN], LabelKind.KNOWN,
     "bsc#1234567: vif-bridge"),
    ([FAILED], [result("passed")], True, [EXPIRED], LabelKind.REGRESSION,
     "passed in baseline B; known issue bsc#1234567 expired on 2026-08-01"),
    ([FAILED, RETEST_PASSED], [result("passed")], True, [EXPIRED], LabelKind.FLAKY,
     "passed on retest; known issue bsc#1234567 expired on 2026-08-01"),
    ([FAILED], [result("passed")], True, [OTHER_HOST], LabelKind.REGRESSION,
     "passed in baseline B"),
    ([FAILED], [result("passed")], True, [OTHER_MESSAGE], LabelKind.REGRESSION,
     "passed in baseline B"),
    ([result("broken")], [result("passed")], True, [KNOWN], LabelKind.BROKEN,
     "the lab, not the product"),
    ([result("skipped")], [result("passed")], True, [], LabelKind.NOT_RUN,
     "skipped; passed in baseline B"),
    ([result("skipped")], [result("failed")], True, [], LabelKind.SKIPPED, ""),
    ([result("skipped")], None, True, [], LabelKind.SKIPPED, ""),
    ([], [result("passed")], True, [], LabelKind.NOT_RUN, "not in this run; passed in "
     "baseline B"),
])
def test_label(now: list[ResultRecord], before: list[ResultRecord] | None,
               ever_passed: bool, known: list[KnownIssue], kind: LabelKind,
               detail: str) -> None:
    comparison = compare(run("R", *now), run("B", *before) if before is not None else None,
                         known=known, ever_passed={TEST} if ever_passed else set(),
                         figure_history=[], today=TODAY)
    label = comparison.labels[TEST]
    assert (label.kind, label.detail) == (kind, detail)
    assert label.bug_url == ("https://bugzilla.suse.com/show_bug.cgi?id=1234567"
                             if kind is LabelKind.KNOWN else "")
    assert comparison.baseline_id == ("B" if before is not None else None)
    assert comparison.expired == ((EXPIRED,) if EXPIRED in known else ())


def test_a_label_carries_the_first_line_of_the_message() -> None:
    failed = result("failed", message="AssertionError: guest did not start\n  at line 3")
    label = compare(run("R", failed), None, known=[], ever_passed=set(), figure_history=[],
                    today=TODAY).labels[TEST]
    assert label.message == "AssertionError: guest did not start"


def test_labels_are_in_run_order_then_the_tests_this_run_lost() -> None:
    current = run("R", result("passed", "t::c"), result("failed", "t::a"),
                  result("passed", "t::a", attempt=2), result("failed", "t::b"))
    baseline = run("B", result("passed", "t::gone"), result("passed", "t::a"))
    comparison = compare(current, baseline, known=[], ever_passed=set(),
                         figure_history=[], today=TODAY)
    assert list(comparison.labels) == ["t::c", "t::a", "t::b", "t::gone"]


A, B, C, D, K = "t::a", "t::b", "t::c", "t::d", "t::known"


@pytest.mark.parametrize(("now", "before", "verdict"), [
    ([result("passed", A), result("passed", B)], [result("passed", A)], "passed"),
    ([result("passed", A)], None, "passed"),
    # Allowed failures: known, never passed, like baseline, flaky.
    ([result("failed", K), result("failed", B), result("failed", C), result("failed", D),
      result("passed", D, attempt=2)],
     [result("failed", B), result("failed", C), result("passed", D)], "passed"),
    ([result("failed", A)], [result("passed", A)], "regressed"),
    ([result("failed", A), result("broken", B)], [result("passed", A)], "regressed"),
    ([result("broken", A), result("passed", B)], [result("passed", A)], "broken"),
    ([result("broken", A), result("failed", C)], None, "broken"),
    ([], [result("passed", A)], "broken"),
    ([], None, "broken"),
    ([result("skipped", A), result("skipped", B)], [result("passed", A)], "broken"),
    # A test the baseline ran and this run skipped is no regression.
    ([result("skipped", A), result("passed", B)], [result("passed", A)], "passed"),
])
def test_verdict(now: list[ResultRecord], before: list[ResultRecord] | None,
                 verdict: str) -> None:
    known = [KnownIssue(test=K, bug="bsc#1", reason="known")]
    comparison = compare(run("R", *now), run("B", *before) if before is not None else None,
                         known=known, ever_passed={B}, figure_history=[], today=TODAY)
    assert comparison.verdict == verdict
    assert exit_code(comparison.verdict) == {"passed": 0, "regressed": 1, "broken": 2}[verdict]


def test_an_unknown_verdict_has_no_exit_code() -> None:
    with pytest.raises(ValueError, match="unknown verdict 'perfect'"):
        exit_code("perfect")


def test_an_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError, match=r"t::a: unknown status 'error'"):
        compare(run("R", result("error", A)), None, known=[], ever_passed=set(),
                figure_history=[], today=TODAY)


def test_regressions_to_retest_are_the_regressed_first_attempts() -> None:
    current = run("R", result("failed", A), result("failed", B), result("failed", C),
                  result("passed", C, attempt=2), result("failed", D))
    baseline = run("B", *(result("passed", test) for test in (A, B, C)))
    comparison = compare(current, baseline, known=[], ever_passed={D}, figure_history=[],
                         today=TODAY)
    assert regressions_to_retest(comparison) == [A, B, D]


# --- figures --------------------------------------------------------------------------

def measured(name: str, value: float, unit: str, status: str = "passed",
             attempt: int = 1) -> ResultRecord:
    return result(status, A, figures=(Figure(name, value, unit),), attempt=attempt)


def history(name: str, unit: str, *values: float) -> list[RunRecord]:
    return [run(f"H{index}", measured(name, value, unit)) for index, value in enumerate(values)]


DOWNTIME = "migration downtime"
TIMES = history(DOWNTIME, "s", 1.0, 1.2, 1.1)  # median 1.1: +25 % is 1.375
THROUGHPUT = history("guest throughput", "Mbit/s", 900, 1000, 950)  # -25 %: 712.5
LOSS = history("guest loss", "%", 0, 0, 0.5)  # median 0: +1 percentage point


@pytest.mark.parametrize(("figure", "past", "tolerances", "flagged"), [
    (measured(DOWNTIME, 1.5, "s"), TIMES, None, True),
    (measured(DOWNTIME, 1.3, "s"), TIMES, None, False),
    (measured(DOWNTIME, 0.2, "s"), TIMES, None, False),  # faster is better
    (measured(DOWNTIME, 1.5, "s", status="failed"), TIMES, None, True),
    (measured("guest throughput", 700, "Mbit/s"), THROUGHPUT, None, True),
    (measured("guest throughput", 720, "Mbit/s"), THROUGHPUT, None, False),
    (measured("guest throughput", 5000, "Mbit/s"), THROUGHPUT, None, False),
    (measured("guest throughput", 0.6, "Gbit/s"),
     history("guest throughput", "Gbit/s", 1.0), None, True),
    (measured("guest loss", 1.2, "%"), LOSS, None, True),
    (measured("guest loss", 0.9, "%"), LOSS, None, False),
    (measured("guest rtt avg", 2.6, "ms"), history("guest rtt avg", "ms", 2, 2), None, True),
    # Overrides: a name pattern wins over a unit, a unit over the default.
    (measured(DOWNTIME, 1.5, "s"), TIMES,
     {"*downtime": Tolerance(higher_is_worse=True, relative=1.0)}, False),
    (measured(DOWNTIME, 1.3, "s"), TIMES,
     {"s": Tolerance(higher_is_worse=True, relative=0.1)}, True),
    (measured(DOWNTIME, 1.3, "s"), TIMES,
     {"*downtime": Tolerance(higher_is_worse=True, absolute=0.5),
      "s": Tolerance(higher_is_worse=True, relative=0.1)}, False),
    # Not judged: an unknown unit, no history, another unit in the history.
    (measured("guests started", 1, "guests"), history("guests started", "guests", 4),
     None, None),
    (measured(DOWNTIME, 9.0, "s"), [], None, None),
    (measured(DOWNTIME, 9.0, "s"), history(DOWNTIME, "ms", 1100), None, None),
    (measured(DOWNTIME, 9.0, "s", status="broken"), TIMES, None, None),
    (measured(DOWNTIME, 9.0, "s", status="skipped"), TIMES, None, None),
])
def test_figure(figure: ResultRecord, past: list[RunRecord],
                tolerances: dict[str, Tolerance] | None, flagged: bool | None) -> None:
    comparison = compare(run("R", figure), None, known=[], ever_passed={A},
                         figure_history=past, today=TODAY, tolerances=tolerances)
    assert [check.flagged for check in comparison.figures] == \
        ([] if flagged is None else [flagged])
    assert len(comparison.figure_flags) == (1 if flagged else 0)


def test_a_figure_median_counts_first_tries_of_measured_results_in_other_runs() -> None:
    current = run("R", measured(DOWNTIME, 2.0, "s"))
    past = [*TIMES,
            run("H-broken", measured(DOWNTIME, 50.0, "s", status="broken")),
            run("H-retest", measured(DOWNTIME, 1.0, "s", status="failed"),
                measured(DOWNTIME, 60.0, "s", attempt=2)),
            current]  # the run itself is not its own history
    [check] = compare(current, None, known=[], ever_passed={A}, figure_history=past,
                      today=TODAY).figures
    assert (check.median, check.runs, check.value) == (1.05, 4, 2.0)
    assert check.change == "+90 %"


@pytest.mark.parametrize(("figures_gate", "verdict"), [(False, "passed"), (True, "regressed")])
def test_a_flagged_figure_fails_the_run_only_with_the_figures_gate(
        figures_gate: bool, verdict: str) -> None:
    comparison = compare(run("R", measured(DOWNTIME, 1.5, "s")), None, known=[],
                         ever_passed={A}, figure_history=TIMES, today=TODAY,
                         figures_gate=figures_gate)
    assert comparison.verdict == verdict


# --- text and HTML helpers ------------------------------------------------------------

def sample() -> Comparison:
    current = run("R", result("passed", A), result("failed", B, message="boom\nmore"),
                  result("broken", C, message="BMC did not answer"),
                  result("failed", "t::known"))
    baseline = run("B", result("passed", B), result("passed", "t::gone"))
    known = [KnownIssue(test="t::known", bug="bsc#42", reason="a known one"),
             KnownIssue(test=B, bug="boo#7", reason="lapsed", expires=date(2026, 7, 1))]
    return compare(current, baseline, known=known, ever_passed=set(), figure_history=[],
                   today=TODAY)


def test_render_text() -> None:
    comparison = sample()
    assert render_text(comparison) == "\n".join([
        "run R against baseline B: regressed (exit 1)",
        "1 regression, 1 broken, 1 known, 1 not run, 1 passed",
        "",
        "REGRESSION  t::b      passed in baseline B; known issue boo#7 expired on "
        "2026-07-01 — boom",
        "BROKEN      t::c      the lab, not the product — BMC did not answer",
        "KNOWN       t::known  bsc#42: a known one — "
        "https://bugzilla.suse.com/show_bug.cgi?id=42 — HotplugError: vif-bridge",
        "NOT RUN     t::gone   not in this run; passed in baseline B",
        "",
        "expired known issues (no longer excuse a failure):",
        "  boo#7 (t::b): expired on 2026-07-01",
    ]) + "\n"


def test_render_text_lists_flagged_figures_as_warnings() -> None:
    comparison = compare(run("R", measured(DOWNTIME, 1.5, "s")), None, known=[],
                         ever_passed={A}, figure_history=TIMES, today=TODAY)
    text = render_text(comparison)
    assert text.startswith("run R against no baseline: passed (exit 0)\n1 passed\n")
    assert text.endswith(
        "figures worse than their history (warnings, not failing the run):\n"
        "  t::a: migration downtime 1.5 s, median 1.1 s of 3 runs (+36 %, tolerance "
        "+25 %)\n")


def test_render_text_of_an_empty_run() -> None:
    comparison = compare(run("R"), None, known=[], ever_passed=set(), figure_history=[],
                         today=TODAY)
    assert render_text(comparison) == "run R against no baseline: broken (exit 2)\nno tests\n"


@pytest.mark.parametrize(("kind", "css", "text"), [
    (LabelKind.REGRESSION, "label-regression", "REGRESSION"),
    (LabelKind.NEVER_PASSED, "label-never-passed", "NEVER PASSED"),
    (LabelKind.LIKE_BASELINE, "label-like-baseline", "LIKE BASELINE"),
    (LabelKind.NOT_RUN, "label-not-run", "NOT RUN"),
    (LabelKind.PASSED, "label-passed", ""),
    (LabelKind.SKIPPED, "label-skipped", ""),
])
def test_html_helpers(kind: LabelKind, css: str, text: str) -> None:
    assert (css_class(kind), short_text(Label(kind))) == (css, text)
