"""The bisection's search and confirmation rules, with a scripted runner in place of the
lab: each build answers its runs with the statuses its script lists, in order (the last
one repeats)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from harness.bughunt.bisect import (
    EXIT_CODES,
    Bisection,
    Confirm,
    Phase,
    StepVerdict,
    Verdict,
    bisect,
)
from harness.bughunt.reproduce import OnRun, RunEvent
from harness.bughunt.series import SeriesBuild
from harness.bughunt.steps import Interrupted, StepResult

TEST = "testsuites/networking/test_bridged.py::test_bridged_guest_talks_to_dom0"


def series(count: int) -> list[SeriesBuild]:
    return [SeriesBuild(Path(f"/builds/b{n}"), f"1.0+{n}") for n in range(count)]


class ScriptedRunner:
    def __init__(self, scripts: dict[str, list[str]],
                 interrupt_at: int | None = None) -> None:
        self.scripts = {name: list(statuses) for name, statuses in scripts.items()}
        self.calls: list[tuple[str, str]] = []  # (build, run id)
        self.interrupt_at = interrupt_at  # the call (1-based) that SIGTERM stops

    def run(self, test_id: str, build: Path | None, host: str,
            attempt_label: str) -> StepResult:
        assert build is not None and test_id == TEST and host == "vlab1"
        self.calls.append((build.name, attempt_label))
        script = self.scripts[build.name]
        status = script.pop(0) if len(script) > 1 else script[0]
        if len(self.calls) == self.interrupt_at:
            raise Interrupted(signal.SIGTERM, StepResult("broken", attempt_label,
                                                         message="interrupted"))
        return StepResult(status, attempt_label, message=f"{status} on {build.name}",
                          hosts=("vlab1",))

    @property
    def builds(self) -> list[str]:
        return [build for build, _ in self.calls]


def good_until(first_bad: int, count: int) -> dict[str, list[str]]:
    return {f"b{n}": ["passed" if n < first_bad else "failed"] for n in range(count)}


DEFAULT_CONFIRM = Confirm()


def run_bisect(runner: ScriptedRunner, count: int, *, confirm: Confirm = DEFAULT_CONFIRM,
               runs_per_step: int = 1, on_run: OnRun | None = None) -> Bisection:
    return bisect(runner, TEST, "vlab1", series(count), confirm=confirm,
                  runs_per_step=runs_per_step, hunt_id="bisect-t", on_run=on_run)


def test_finds_the_first_bad_build_with_default_confirmations() -> None:
    runner = ScriptedRunner(good_until(3, 6))
    outcome = run_bisect(runner, 6)
    assert outcome.verdict is Verdict.FOUND and outcome.exit_code == 0
    assert (outcome.last_good, outcome.first_bad) == (series(6)[2], series(6)[3])
    phases = [step.phase for step in outcome.steps]
    # the ends twice each, interleaved; then the search; the pair three times each
    assert runner.builds[:4] == ["b0", "b5", "b0", "b5"]
    assert phases[:4] == [Phase.START] * 4
    assert runner.builds[-6:] == ["b2", "b3"] * 3
    assert phases[-6:] == [Phase.FINAL] * 6
    searched = [step.build.name for step in outcome.steps if step.phase is Phase.SEARCH]
    assert runner.builds[4:-6] == searched and set(searched) <= {"b1", "b2", "b3", "b4"}
    assert len(searched) == 2  # four builds between the ends: two halvings
    assert outcome.last_failure is not None
    assert outcome.last_failure.run_id == runner.calls[-1][1]  # b3's last confirmation


def test_confirm_one_on_a_four_build_series_names_the_third() -> None:
    runner = ScriptedRunner(good_until(2, 4))
    outcome = run_bisect(runner, 4, confirm=Confirm(1, 1))
    assert outcome.verdict is Verdict.FOUND
    assert outcome.first_bad == series(4)[2]
    assert runner.builds == ["b0", "b3", "b2", "b1", "b1", "b2"]
    assert [label for _, label in runner.calls][:2] == ["bisect-t-step01-run1-try1",
                                                        "bisect-t-step02-run1-try1"]


def test_a_step_is_bad_if_any_of_its_runs_fails() -> None:
    scripts = good_until(2, 4)
    scripts["b2"] = ["passed", "failed", "passed"]  # flaky: fails once in three
    runner = ScriptedRunner(scripts)
    outcome = run_bisect(runner, 4, confirm=Confirm(1, 1), runs_per_step=3)
    assert outcome.verdict is Verdict.INCONSISTENT  # b2 passes again in the final pair
    search = next(step for step in outcome.steps if step.build.name == "b2")
    assert search.verdict is StepVerdict.BAD
    assert [run.result.status for run in search.runs] == ["passed", "failed"]
    good_end = outcome.steps[0]
    assert good_end.verdict is StepVerdict.GOOD and len(good_end.runs) == 3


def test_runs_per_step_finds_an_intermittent_failure_consistently() -> None:
    scripts = good_until(2, 4)
    scripts["b2"] = scripts["b3"] = ["passed", "failed"] * 20
    runner = ScriptedRunner(scripts)
    outcome = run_bisect(runner, 4, confirm=Confirm(1, 1), runs_per_step=2)
    assert outcome.verdict is Verdict.FOUND and outcome.first_bad == series(4)[2]


def test_a_broken_run_is_retried_three_times_then_the_build_is_skipped() -> None:
    scripts = good_until(2, 5)
    scripts["b1"] = ["broken"]
    runner = ScriptedRunner(scripts)
    outcome = run_bisect(runner, 5, confirm=Confirm(1, 1))
    b1 = [label for build, label in runner.calls if build == "b1"]
    assert [label.rsplit("-", 1)[1] for label in b1] == ["try1", "try2", "try3", "try4"]
    assert outcome.skipped == [series(5)[1]]
    # b1 is untestable and b2 bad: the first bad build is b1 or b2
    assert outcome.verdict is Verdict.INCONCLUSIVE and outcome.exit_code == 3
    assert outcome.suspects == series(5)[1:3]
    assert not any(step.phase is Phase.FINAL for step in outcome.steps)


def test_a_broken_run_that_passes_on_retry_counts() -> None:
    scripts = good_until(2, 4)
    scripts["b1"] = ["broken", "skipped", "passed"]
    runner = ScriptedRunner(scripts)
    outcome = run_bisect(runner, 4, confirm=Confirm(1, 1))
    assert outcome.verdict is Verdict.FOUND and outcome.first_bad == series(4)[2]
    step = next(step for step in outcome.steps if step.build.name == "b1")
    assert [(run.attempt, run.result.status) for run in step.runs] == [
        (1, "broken"), (2, "skipped"), (3, "passed")]


def test_a_skipped_build_outside_the_final_pair_does_not_matter() -> None:
    scripts = good_until(2, 6)
    scripts["b3"] = ["broken"]
    runner = ScriptedRunner(scripts)
    outcome = run_bisect(runner, 6, confirm=Confirm(1, 1))
    assert outcome.verdict is Verdict.FOUND and outcome.first_bad == series(6)[2]
    assert outcome.skipped == [series(6)[3]]


def test_a_good_end_that_fails_is_inconsistent() -> None:
    runner = ScriptedRunner(good_until(0, 4))
    outcome = run_bisect(runner, 4)
    assert outcome.verdict is Verdict.INCONSISTENT and outcome.exit_code == 4
    assert runner.builds == ["b0"]  # the first contradiction ends it
    assert "good build b0 failed" in outcome.reason


def test_a_good_end_that_fails_on_its_second_confirmation() -> None:
    scripts = good_until(2, 4)
    scripts["b0"] = ["passed", "failed"]
    runner = ScriptedRunner(scripts)
    outcome = run_bisect(runner, 4)
    assert outcome.verdict is Verdict.INCONSISTENT
    assert runner.builds == ["b0", "b3", "b0"]


def test_a_bad_end_that_passes_is_not_reproducible() -> None:
    runner = ScriptedRunner(good_until(4, 4))
    outcome = run_bisect(runner, 4)
    assert outcome.verdict is Verdict.NOT_REPRODUCIBLE and outcome.exit_code == 5
    assert runner.builds == ["b0", "b3"]
    assert outcome.last_failure is None


def test_a_bad_end_that_fails_then_passes_is_inconsistent() -> None:
    scripts = good_until(2, 4)
    scripts["b3"] = ["failed", "passed"]
    runner = ScriptedRunner(scripts)
    outcome = run_bisect(runner, 4)
    assert outcome.verdict is Verdict.INCONSISTENT and outcome.exit_code == 4
    assert runner.builds == ["b0", "b3", "b0", "b3"]


def test_a_bad_end_that_only_breaks() -> None:
    scripts = good_until(2, 4)
    scripts["b3"] = ["broken"]
    runner = ScriptedRunner(scripts)
    outcome = run_bisect(runner, 4)
    assert outcome.verdict is Verdict.ONLY_BROKEN and outcome.exit_code == 6
    assert runner.builds == ["b0"] + ["b3"] * 4


def test_a_good_end_that_only_breaks_is_inconclusive() -> None:
    scripts = good_until(2, 4)
    scripts["b0"] = ["broken"]
    outcome = run_bisect(ScriptedRunner(scripts), 4)
    assert outcome.verdict is Verdict.INCONCLUSIVE and outcome.exit_code == 3


def test_a_final_confirmation_that_disagrees_is_inconsistent() -> None:
    scripts = good_until(2, 4)
    scripts["b1"] = ["passed", "passed", "failed"]  # search, first and second confirmation
    runner = ScriptedRunner(scripts)
    outcome = run_bisect(runner, 4, confirm=Confirm(1, 3))
    assert outcome.verdict is Verdict.INCONSISTENT
    assert runner.builds == ["b0", "b3", "b2", "b1", "b1", "b2", "b1"]
    assert "b1 was bad" in outcome.reason


def test_a_final_confirmation_that_breaks_is_inconclusive() -> None:
    scripts = good_until(2, 4)
    scripts["b2"] = ["failed", "broken"]
    outcome = run_bisect(ScriptedRunner(scripts), 4, confirm=Confirm(1, 1))
    assert outcome.verdict is Verdict.INCONCLUSIVE
    assert outcome.steps[-1].verdict is StepVerdict.UNTESTABLE


def test_every_verdict_has_its_own_exit_code() -> None:
    codes = list(EXIT_CODES.values())
    assert len(set(codes)) == len(codes) == len(Verdict) - 1  # interrupted: 128+N
    assert EXIT_CODES[Verdict.FOUND] == 0 and 1 not in codes and 2 not in codes


def test_an_interrupted_run_stops_the_bisection_with_what_it_has() -> None:
    runner = ScriptedRunner(good_until(3, 6), interrupt_at=5)
    outcome = run_bisect(runner, 6)
    assert outcome.verdict is Verdict.INTERRUPTED
    assert outcome.exit_code == 128 + signal.SIGTERM
    assert len(runner.calls) == 5  # nothing ran after it
    assert outcome.steps[-1].verdict is StepVerdict.INTERRUPTED
    assert outcome.steps[-1].runs[-1].result.message == "interrupted"
    assert [step.verdict for step in outcome.steps[:4]] == [
        StepVerdict.GOOD, StepVerdict.BAD, StepVerdict.GOOD, StepVerdict.BAD]


def test_ctrl_c_between_runs_stops_it_too() -> None:
    runner = ScriptedRunner(good_until(3, 6))

    def on_run(event: RunEvent) -> None:
        if event.done == 2:
            raise KeyboardInterrupt

    outcome = run_bisect(runner, 6, on_run=on_run)
    assert outcome.verdict is Verdict.INTERRUPTED and outcome.exit_code == 130
    assert len(runner.calls) == 2


def test_progress_events_count_runs_and_estimate_the_rest() -> None:
    events: list[RunEvent] = []
    runner = ScriptedRunner(good_until(3, 6))
    outcome = run_bisect(runner, 6, on_run=events.append)
    assert [event.done for event in events] == list(range(1, len(runner.calls) + 1))
    # at first: 4 start confirmations, at most 3 halvings of 4 builds, 6 final ones
    assert events[0].planned == 13
    # the search took 2: the estimate comes down to what ran
    assert len(runner.calls) == 12 and events[-1].planned == events[-1].done == 12
    assert all(event.planned >= event.done for event in events)
    assert events[0].label == "step 1 (confirm start) b0: run 1"
    assert outcome.verdict is Verdict.FOUND


def test_confirmations_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Confirm(0, 3)
    with pytest.raises(ValueError):
        run_bisect(ScriptedRunner({}), 1)
