"""One run of one test on one build and host: what the search asks for and gets back."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import SignalInterrupt


@dataclass(frozen=True)
class StepResult:
    """The test's status in one run (passed, failed, broken or skipped), and where
    that run's reports are."""

    status: str
    run_id: str
    reports: Path | None = None  # reports/<run-id>/, None if the run wrote nothing
    message: str = ""
    duration_s: float = 0.0
    hosts: tuple[str, ...] = ()  # whose com1 logs the run has
    evidence: tuple[str, ...] = ()  # the test's attachments, relative to `reports`

    @property
    def tested(self) -> bool:
        """Whether the run told anything about the product: a broken run (the lab) or a
        skipped one (the test did not apply) did not."""
        return self.status in ("passed", "failed")


class StepRunner(Protocol):
    def run(self, test_id: str, build: Path | None, host: str,
            attempt_label: str) -> StepResult:
        """Run `test_id` once on `host` with `build` installed (None: the lab's default
        build); `attempt_label` names the run (its run id). Raises Interrupted when the
        run was stopped by a signal."""
        ...


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped a run: the hunt ends with what it has."""

    def __init__(self, signum: int, result: StepResult | None = None) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum
        self.result = result  # the run that was interrupted, if it recorded one


def signal_of(interrupt: KeyboardInterrupt) -> int:
    """SIGTERM for the harness's SignalInterrupt of it, else SIGINT (Ctrl-C)."""
    return interrupt.signum if isinstance(interrupt, SignalInterrupt) else signal.SIGINT
