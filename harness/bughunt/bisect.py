"""`xenhil bisect`: the first bad build of an ordered series, by osstest's
cs-bisection-step rules and KernelCI's retries of broken steps.

- A step tests one build: `runs_per_step` runs, and it is BAD as soon as one fails,
  GOOD when all pass. A run that tells nothing (broken: the lab; or skipped) is tried
  again, up to `broken_retries` more times; a run that never tells makes the step
  UNTESTABLE, and the search skips that build.
- Before the search the ends are confirmed, interleaved: the good build must pass and
  the bad build fail, `confirm.start` times each (good, bad, good, bad, ...).
- The search halves the builds between the last good and the first bad build.
- At the end the last good / first bad pair is confirmed `confirm.final` times each,
  interleaved the same way.
- The first contradiction ends the bisection with its verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from .reproduce import OnRun, RunEvent
from .series import SeriesBuild
from .steps import Interrupted, StepResult, StepRunner, signal_of


class Verdict(StrEnum):
    FOUND = "found"
    INCONCLUSIVE = "inconclusive"
    INCONSISTENT = "inconsistent"
    NOT_REPRODUCIBLE = "not reproducible"
    ONLY_BROKEN = "seen only in broken runs"
    INTERRUPTED = "interrupted"


EXIT_CODES = {
    Verdict.FOUND: 0,
    Verdict.INCONCLUSIVE: 3,
    Verdict.INCONSISTENT: 4,
    Verdict.NOT_REPRODUCIBLE: 5,
    Verdict.ONLY_BROKEN: 6,
}
MEANINGS = {
    Verdict.FOUND: "the first bad build is found, and the last good / first bad pair "
                   "confirmed",
    Verdict.INCONCLUSIVE: "builds that could not be tested (broken) hide the first bad "
                          "build among several, or a confirmation could not finish",
    Verdict.INCONSISTENT: "a build both passed and failed: the good build failed, the "
                          "bad one passed after failing, or a confirmation disagreed",
    Verdict.NOT_REPRODUCIBLE: "the test passed on the bad build: the failure does not "
                              "reproduce here",
    Verdict.ONLY_BROKEN: "the bad build's runs all broke: the failure was never seen as a "
                         "product failure",
    Verdict.INTERRUPTED: "stopped by Ctrl-C or SIGTERM (exit 128+signal)",
}


class Phase(StrEnum):
    START = "confirm start"
    SEARCH = "search"
    FINAL = "confirm final"


class StepVerdict(StrEnum):
    GOOD = "good"
    BAD = "bad"
    UNTESTABLE = "untestable"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class Confirm:
    """How many times each end is confirmed before the search (`start`) and the final
    pair after it (`final`)."""

    start: int = 2
    final: int = 3

    def __post_init__(self) -> None:
        if self.start < 1 or self.final < 1:
            raise ValueError("confirmations must be at least 1")


@dataclass(frozen=True)
class StepRun:
    run: int  # 1..runs_per_step
    attempt: int  # 1, then each retry of a broken run
    result: StepResult


@dataclass
class Step:
    number: int
    phase: Phase
    build: SeriesBuild
    runs: list[StepRun] = field(default_factory=list)
    verdict: StepVerdict | None = None  # None while it runs


@dataclass
class Bisection:
    test_id: str
    host: str
    series: list[SeriesBuild]
    confirm: Confirm
    runs_per_step: int
    steps: list[Step] = field(default_factory=list)
    verdict: Verdict | None = None
    reason: str = ""
    last_good: SeriesBuild | None = None  # confirmed only when the verdict is FOUND
    first_bad: SeriesBuild | None = None
    suspects: list[SeriesBuild] = field(default_factory=list)  # INCONCLUSIVE: one is it
    signum: int | None = None

    @property
    def exit_code(self) -> int:
        if self.signum is not None:
            return 128 + self.signum
        return EXIT_CODES.get(self.verdict, 2) if self.verdict is not None else 2

    @property
    def skipped(self) -> list[SeriesBuild]:
        """Builds the search skipped: they could not be tested."""
        return [step.build for step in self.steps if step.phase is Phase.SEARCH
                and step.verdict is StepVerdict.UNTESTABLE]

    @property
    def last_failure(self) -> StepResult | None:
        """The last failed run of the first bad build, else of any build."""
        failures = [run.result for step in self.steps for run in step.runs
                    if run.result.status == "failed"]
        of_first_bad = [run.result for step in self.steps for run in step.runs
                        if run.result.status == "failed" and step.build == self.first_bad]
        found = of_first_bad or failures
        return found[-1] if found else None


class _Ended(Exception):
    """The bisection has its verdict."""

    def __init__(self, verdict: Verdict, reason: str) -> None:
        super().__init__(reason)
        self.verdict = verdict
        self.reason = reason


class Bisector:
    def __init__(self, runner: StepRunner, test_id: str, host: str,
                 series: list[SeriesBuild], *, confirm: Confirm = Confirm(),
                 runs_per_step: int = 1, broken_retries: int = 3, hunt_id: str,
                 on_run: OnRun | None = None) -> None:
        if len(series) < 2:
            raise ValueError("a bisection needs a good and a bad build")
        if runs_per_step < 1 or broken_retries < 0:
            raise ValueError("runs_per_step must be at least 1, broken_retries at least 0")
        self.runner = runner
        self.hunt_id = hunt_id
        self.broken_retries = broken_retries
        self.on_run = on_run
        self.outcome = Bisection(test_id, host, series, confirm, runs_per_step)
        self._lo, self._hi = 0, len(series) - 1
        self._skipped: set[int] = set()
        self._done = 0

    def bisect(self) -> Bisection:
        outcome = self.outcome
        try:
            self._confirm_start()
            self._search()
            self._confirm_final()
        except _Ended as ended:
            outcome.verdict, outcome.reason = ended.verdict, ended.reason
        except Interrupted as interruption:
            self._interrupted(interruption.signum)
        except KeyboardInterrupt as interrupt:  # between runs
            self._interrupted(signal_of(interrupt))
        return outcome

    def _interrupted(self, signum: int) -> None:
        outcome = self.outcome
        outcome.verdict, outcome.signum = Verdict.INTERRUPTED, signum
        outcome.reason = f"stopped by signal {signum} in step {len(outcome.steps)}"
        if outcome.steps and outcome.steps[-1].verdict is None:
            outcome.steps[-1].verdict = StepVerdict.INTERRUPTED

    # The three phases

    def _confirm_start(self) -> None:
        series = self.outcome.series
        good, bad = series[0], series[-1]
        for _ in range(self.outcome.confirm.start):
            verdict = self._step(good, Phase.START)
            if verdict is StepVerdict.BAD:
                raise _Ended(Verdict.INCONSISTENT, f"the good build {good.name} failed: the "
                             "failure is older than it, or intermittent")
            if verdict is StepVerdict.UNTESTABLE:
                raise _Ended(Verdict.INCONCLUSIVE, f"the good build {good.name} could not "
                             "be tested: its runs broke")
            verdict = self._step(bad, Phase.START)
            if verdict is StepVerdict.GOOD:
                if self._failed(bad):
                    raise _Ended(Verdict.INCONSISTENT, f"the bad build {bad.name} failed, "
                                 "then passed: an intermittent failure (more "
                                 "--runs-per-step make a step see it)")
                raise _Ended(Verdict.NOT_REPRODUCIBLE, f"the test passed on the bad build "
                             f"{bad.name}")
            if verdict is StepVerdict.UNTESTABLE:
                if self._failed(bad):
                    raise _Ended(Verdict.INCONCLUSIVE, f"the bad build {bad.name} could not "
                                 "be confirmed: its runs broke")
                raise _Ended(Verdict.ONLY_BROKEN, f"every run on the bad build {bad.name} "
                             "broke: the failure was not seen as a product failure")

    def _search(self) -> None:
        series, outcome = self.outcome.series, self.outcome
        while inner := self._untested_between():
            middle = inner[len(inner) // 2]
            verdict = self._step(series[middle], Phase.SEARCH)
            if verdict is StepVerdict.GOOD:
                self._lo = middle
            elif verdict is StepVerdict.BAD:
                self._hi = middle
            else:
                self._skipped.add(middle)
            outcome.last_good, outcome.first_bad = series[self._lo], series[self._hi]
        outcome.last_good, outcome.first_bad = series[self._lo], series[self._hi]
        if self._hi - self._lo > 1:
            outcome.suspects = series[self._lo + 1:self._hi + 1]
            raise _Ended(Verdict.INCONCLUSIVE, "the first bad build is one of "
                         f"{', '.join(build.name for build in outcome.suspects)}: the "
                         "builds before the last could not be tested")

    def _confirm_final(self) -> None:
        good, bad = self.outcome.last_good, self.outcome.first_bad
        assert good is not None and bad is not None  # set by the search
        for _ in range(self.outcome.confirm.final):
            for build, expected in ((good, StepVerdict.GOOD), (bad, StepVerdict.BAD)):
                verdict = self._step(build, Phase.FINAL)
                if verdict is StepVerdict.UNTESTABLE:
                    raise _Ended(Verdict.INCONCLUSIVE, f"the final confirmation could not "
                                 f"finish: the runs on {build.name} broke")
                if verdict is not expected:
                    raise _Ended(Verdict.INCONSISTENT, f"the final confirmation "
                                 f"disagreed: {build.name} was {verdict}, "
                                 f"earlier {expected}")
        raise _Ended(Verdict.FOUND, f"{bad.name} is the first bad build, {good.name} the "
                     "last good one")

    # Steps and runs

    def _step(self, build: SeriesBuild, phase: Phase) -> StepVerdict:
        step = Step(len(self.outcome.steps) + 1, phase, build)
        self.outcome.steps.append(step)
        step.verdict = self._step_verdict(step)
        return step.verdict

    def _step_verdict(self, step: Step) -> StepVerdict:
        for run in range(1, self.outcome.runs_per_step + 1):
            for attempt in range(1, self.broken_retries + 2):
                result = self._run(step, run, attempt)
                if result.tested:
                    break
            else:
                return StepVerdict.UNTESTABLE
            if result.status == "failed":
                return StepVerdict.BAD
        return StepVerdict.GOOD

    def _run(self, step: Step, run: int, attempt: int) -> StepResult:
        label = f"{self.hunt_id}-step{step.number:02d}-run{run}-try{attempt}"
        try:
            result = self.runner.run(self.outcome.test_id, step.build.path,
                                     self.outcome.host, label)
        except Interrupted as interruption:
            if interruption.result is not None:
                self._record(step, StepRun(run, attempt, interruption.result))
            raise
        self._record(step, StepRun(run, attempt, result))
        return result

    def _record(self, step: Step, run: StepRun) -> None:
        step.runs.append(run)
        self._done += 1
        if self.on_run is not None:
            label = (f"step {step.number} ({step.phase}) {step.build.name}: run {run.run}"
                     + (f" try {run.attempt}" if run.attempt > 1 else ""))
            self.on_run(RunEvent(label, run.result, self._done,
                                 self._done + self._runs_left(step, run)))

    def _failed(self, build: SeriesBuild) -> bool:
        return any(run.result.status == "failed" for step in self.outcome.steps
                   if step.build == build for run in step.runs)

    def _untested_between(self) -> list[int]:
        return [index for index in range(self._lo + 1, self._hi)
                if index not in self._skipped]

    def _runs_left(self, step: Step, run: StepRun) -> int:
        """An estimate: every step left takes all its runs, no run breaks."""
        confirm, per_step = self.outcome.confirm, self.outcome.runs_per_step
        this_step = {"failed": 0, "passed": per_step - run.run}.get(
            run.result.status, per_step - run.run + 1)  # a run that told nothing: again
        searches = math.ceil(math.log2(len(self._untested_between()) + 1))
        steps_left = {
            Phase.START: 2 * confirm.start - self._steps_in(Phase.START) + searches
            + 2 * confirm.final,
            Phase.SEARCH: searches - 1 + 2 * confirm.final,
            Phase.FINAL: 2 * confirm.final - self._steps_in(Phase.FINAL),
        }[step.phase]
        return this_step + max(steps_left, 0) * per_step

    def _steps_in(self, phase: Phase) -> int:
        return sum(step.phase is phase for step in self.outcome.steps)


def bisect(runner: StepRunner, test_id: str, host: str, series: list[SeriesBuild], *,
           confirm: Confirm = Confirm(), runs_per_step: int = 1, broken_retries: int = 3,
           hunt_id: str, on_run: OnRun | None = None) -> Bisection:
    """Find the first bad build of `series` (ordered oldest first; the first is the
    good build, the last the bad one) for `test_id` on `host`."""
    return Bisector(runner, test_id, host, series, confirm=confirm,
                    runs_per_step=runs_per_step, broken_retries=broken_retries,
                    hunt_id=hunt_id, on_run=on_run).bisect()
