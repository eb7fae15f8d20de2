"""`xenhil reproduce`: one test, on one host and build, N times; its failure rate k/N."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .steps import Interrupted, StepResult, StepRunner, signal_of

UNTIL = ("fail", "pass")


@dataclass(frozen=True)
class RunEvent:
    """One run has ended: for printing it and the progress as it happens."""

    label: str  # what it was, e.g. "attempt 2/5" or "step 3 (search) xen-...: run 1 try 1"
    result: StepResult
    done: int  # runs ended so far, this one included
    planned: int  # `done` and an estimate of the runs left


OnRun = Callable[[RunEvent], None]


@dataclass
class Reproduction:
    test_id: str
    host: str
    build: Path | None  # None: the lab's default build
    count: int
    until: str | None
    attempts: list[StepResult] = field(default_factory=list)
    signum: int | None = None  # the signal that stopped it

    @property
    def failed(self) -> int:
        return sum(result.status == "failed" for result in self.attempts)

    @property
    def rate(self) -> str:
        """k/N: failed attempts of the attempts made."""
        return f"{self.failed}/{len(self.attempts)}"

    @property
    def exit_code(self) -> int:
        """128+N stopped by signal N; 1 the test failed at least once (reproduced); 0
        every attempt passed; 2 no failure, but an attempt was broken or skipped."""
        if self.signum is not None:
            return 128 + self.signum
        if self.failed:
            return 1
        return 0 if self.attempts and all(r.status == "passed" for r in self.attempts) else 2


def reproduce(runner: StepRunner, test_id: str, host: str, build: Path | None, count: int,
              *, until: str | None = None, hunt_id: str, on_run: OnRun | None = None
              ) -> Reproduction:
    """Run the test `count` times on `host`, each a run of its own named
    `<hunt_id>-tryNN`; stop after the first failure (`until="fail"`) or pass
    (`until="pass"`), or when a run is interrupted."""
    if count < 1:
        raise ValueError("count must be at least 1")
    if until is not None and until not in UNTIL:
        raise ValueError(f"until must be one of {UNTIL}, not {until!r}")
    outcome = Reproduction(test_id, host, build, count, until)

    def record(number: int, result: StepResult) -> None:
        outcome.attempts.append(result)
        if on_run is not None:
            on_run(RunEvent(f"attempt {number}/{count}", result, number, count))

    stop_on = {"fail": "failed", "pass": "passed"}.get(until or "")
    try:
        for number in range(1, count + 1):
            try:
                result = runner.run(test_id, build, host, f"{hunt_id}-try{number:02d}")
            except Interrupted as interruption:
                if interruption.result is not None:
                    record(number, interruption.result)
                raise
            record(number, result)
            if result.status == stop_on:
                break
    except Interrupted as interruption:
        outcome.signum = interruption.signum
    except KeyboardInterrupt as interrupt:  # between runs
        outcome.signum = signal_of(interrupt)
    return outcome
