"""The pytest sessions of a run: one-host scenarios side by side on several hosts.

A lab of identical hosts (the virtual lab's clones) runs its one-host scenarios on the
hosts of `single_host_scenarios_on` only; the other hosts would idle through them.
`single_host_scenarios_beside` moves the one-host scenarios under some paths to those
other hosts. A run of a profile then has two waves:

1. one session per host with one-host scenarios, side by side: the first in this
   process, each other one in a subprocess (`python -m harness.sessions`) whose output
   goes to reports/<run-id>/sessions/<host>.log, its verdicts also to this log. Each
   session holds its own host only: it installs and boots it, and records its com1;
2. one session with the two-host scenarios, on every host, which reuses the hosts the
   first wave booted into the build (--booted-earlier): no second install or boot.

Every session writes the same run: its allure-results, its rows in the results
database, its com1 logs (appended to). Which scenarios are which comes from pytest's
own collection, done once first, with the run's options.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import pytest

from .errors import SignalInterrupt
from .lab import Lab
from .paths import scenario_paths

log = logging.getLogger(__name__)

# pytest's own exit codes that mean the harness or its input failed, not a test.
PYTEST_TROUBLE = (pytest.ExitCode.INTERNAL_ERROR, pytest.ExitCode.USAGE_ERROR)
LINE_LIMIT = 64 * 1024  # bytes of one output line of a session in a subprocess
# pytest -v's verdict of a test: on the test's own line, or alone after its live logs.
VERDICT = re.compile(r"\b(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b.*\[\s*\d+%\]")
NODE_ID = re.compile(r"^(\S+\.py::\S+)")


@contextlib.contextmanager
def interrupting_signals() -> Iterator[list[int]]:
    """Ctrl-C and SIGTERM end the run: the current test is reported interrupted, its
    fixtures clean up (guests destroyed), and the reports are written. A second
    signal during that cleanup is ignored, so the cleanup finishes. Yields the
    signals received (pytest itself would turn Ctrl-C into an exit code that does not
    say so)."""
    received: list[int] = []

    def interrupt(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) == 1:
            raise SignalInterrupt(signum)
        log.warning("%s again: still cleaning up, the run ends when that is done",
                    signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, interrupt)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@dataclass(frozen=True)
class Collected:
    """A test function as pytest collected it: its node id without parameters."""

    test: str
    two_hosts: bool  # it runs on a pair of hosts (xen_host_pair, marker two_hosts)


class _Collector:
    def __init__(self) -> None:
        self.tests: list[Collected] = []

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            callspec = getattr(item, "callspec", None)
            pair = callspec is not None and "xen_host_pair" in callspec.params
            test = Collected(item.nodeid.partition("[")[0],
                             pair or item.get_closest_marker("two_hosts") is not None)
            if test not in self.tests:
                self.tests.append(test)


def collect(args: Sequence[str]) -> list[Collected] | None:
    """The tests `args` select, from pytest's collection; None if it fails (the run's
    own session then says why)."""
    collector = _Collector()
    with contextlib.redirect_stdout(io.StringIO()):
        code = pytest.main([*args, "--collect-only", "-q"], plugins=[collector])
    return collector.tests if code == pytest.ExitCode.OK else None


@dataclass(frozen=True)
class Session:
    hosts: tuple[str, ...]
    tests: tuple[str, ...]  # node ids, relative to the harness's root


@dataclass(frozen=True)
class Waves:
    here: Session  # one-host tests on single_host_scenarios_on, in this process
    beside: tuple[Session, ...]  # one-host tests of the other hosts, one subprocess each
    two_host: tuple[str, ...] = ()


def _under(test: str, path: str) -> bool:
    return test == path or test.startswith((f"{path}/", f"{path}::"))


def plan(lab: Lab, tests: Sequence[Collected]) -> Waves | None:
    """The waves of a run of `tests` on every host of `lab`; None when no one-host test
    goes to another host (one session then runs them all, as without the option)."""
    beside: dict[str, list[str]] = {host: [] for host in lab.single_host_scenarios_beside}
    here: list[str] = []
    two_host: list[str] = []
    for test in tests:
        if test.two_hosts:
            two_host.append(test.test)
            continue
        host = next((host for host, paths in lab.single_host_scenarios_beside.items()
                     if any(_under(test.test, path) for path in paths)), None)
        (here if host is None else beside[host]).append(test.test)
    if not any(beside.values()):
        return None
    return Waves(Session(lab.single_host_scenarios_on, tuple(here)),
                 tuple(Session((host, ), tuple(own)) for host, own in beside.items() if own),
                 tuple(two_host))


@dataclass
class SessionBeside:
    """A host's session in a subprocess: its output into `output`, each verdict also
    into this process's log."""

    host: str
    output: Path
    process: subprocess.Popen[bytes]
    relay: threading.Thread = field(init=False)

    @classmethod
    def start(cls, host: str, args: Sequence[str], output: Path) -> SessionBeside:
        output.parent.mkdir(parents=True, exist_ok=True)
        # Unbuffered: its verdicts are relayed as they come.
        process = subprocess.Popen([sys.executable, "-m", "harness.sessions", *args],
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                   stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        session = cls(host, output, process)
        session.relay = threading.Thread(target=session._relay, daemon=True,
                                         name=f"session-{host}")
        session.relay.start()
        log.info("%s: its one-host scenarios run beside, in their own session (PID %d; "
                 "output in %s)", host, process.pid, output)
        return session

    def _relay(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        test = ""
        with self.output.open("ab") as out:
            for line in iter(lambda: stdout.readline(LINE_LIMIT), b""):
                out.write(line)
                out.flush()
                text = line.decode(errors="replace").rstrip()
                if match := NODE_ID.match(text):
                    test = match.group(1)
                if verdict := VERDICT.search(text):
                    log.info("%s (beside): %s %s", self.host, test, verdict.group(0))

    def wait(self, timeout: float) -> int | None:
        """The session's exit code, or None if it is still running after `timeout` s."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float) -> int:
        """End the session: SIGTERM (its test is reported interrupted, its guests are
        destroyed), SIGKILL after `timeout` s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("%s: its session did not end within %.0f s of SIGTERM: killed",
                          self.host, timeout)
                self.process.kill()
                self.process.wait(10)
        self.relay.join(10)
        return self.process.returncode


def run_waves(waves: Waves, lab: Lab, reports: Path, args: Sequence[str],
              pytest_here: Callable[[list[str]], int], signals: list[int],
              booted_in_run: Callable[[], list[str]]) -> int:
    """Run `waves` with the run's pytest `args` (no test paths, no --hosts);
    `pytest_here` runs a session in this process. Returns pytest's exit code for the
    run: a session's trouble (a harness or usage error, a session that died) first."""
    codes = []
    # Guest addresses: slot 0 here, one per session beside, the last for the second wave.
    slots = len(waves.beside) + 2
    started = [SessionBeside.start(
        session.hosts[0], [*scenario_paths(session.tests), *args, "--hosts", session.hosts[0],
                           "--guest-slot", f"{slot}/{slots}"],
        reports / "sessions" / f"{session.hosts[0]}.log")
        for slot, session in enumerate(waves.beside, start=1)]
    try:
        if waves.here.tests:
            codes.append(pytest_here([*scenario_paths(waves.here.tests), *args,
                                      "--hosts", ",".join(waves.here.hosts),
                                      "--guest-slot", f"0/{slots}"]))
        for session in started:
            if signals:
                break
            log.info("%s: waiting for its session to end", session.host)
            limit = lab.timeouts(lab.host(session.host))["host_session"]
            if session.wait(limit) is None:
                log.error("%s: its session did not end within %.0f s after this one's: "
                          "stopping it", session.host, limit)
    except SignalInterrupt:  # while waiting: the sessions beside are stopped below
        pass
    finally:
        for session in started:
            code = session.stop(lab.timeouts(lab.host(session.host))["session_stop"])
            codes.append(_session_code(session.host, code))
    if waves.two_host and not signals:
        codes.append(pytest_here([*scenario_paths(waves.two_host), *args,
                                  "--guest-slot", f"{slots - 1}/{slots}",
                                  "--booted-earlier", ",".join(booted_in_run())]))
    return next((code for code in codes if code in PYTEST_TROUBLE),
                codes[0] if codes else int(pytest.ExitCode.NO_TESTS_COLLECTED))


def _session_code(host: str, code: int) -> int:
    if code < 0:
        log.error("%s: its session was ended by %s: its remaining tests did not run",
                  host, signal.Signals(-code).name)
        return int(pytest.ExitCode.INTERNAL_ERROR)
    return code


def main(args: Sequence[str]) -> int:
    """A session beside: pytest on `args`, interrupted by SIGTERM as a run is."""
    with interrupting_signals():
        return int(pytest.main(list(args)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
