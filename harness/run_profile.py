"""Where a run's time went: per test, the seconds of each phase, from its allure-results.

allure-pytest writes each test's call (start, stop, steps) to *-result.json, and each
fixture's setup and teardown (befores, afters, with their steps) to *-container.json.
The harness names its steps (harness.evidence), so a phase is a set of step and
fixture names:
  boot          "install ... and boot", "recover HOST: ..." (power cycles, Xen verified)
  install       "install BUILD on HOST" (packages and GRUB, inside the boot)
  guest create  "create guest ..." (xl create until the guest answers SSH)
  pairing       the host_pair fixture (migration trust set up and removed)
  leak check    "leak check: ..." (state noted before, compared and settled after)
  diagnosis     "diagnose the failure: ..." (Xen dump, guest state, support bundles)
  fixtures      the rest of setup and teardown
  body          the rest of the test's call
A moment covered by several phases counts once, for the first of PHASES. Runs from
before the install and leak check steps existed: those two are read from the command
transcripts instead (their timestamps have whole seconds).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

PHASES = ("install", "diagnosis", "leak check", "guest create", "boot", "pairing", "body",
          "fixtures")
STEP_PHASES = (
    ("install", re.compile(r"^install (?!.* and boot$)")),
    ("boot", re.compile(r"^install .* and boot$|^recover \S+: ")),
    ("guest create", re.compile(r"^create guest ")),
    ("leak check", re.compile(r"^leak check: ")),
    ("diagnosis", re.compile(r"^diagnose the failure")),
)
FIXTURE_PHASES = {"host_pair": "pairing"}
# What a command transcript shows of the phases older runs have no step for.
TRANSCRIPT_ENTRY = re.compile(r"^\[(\d\d):(\d\d):(\d\d)\] \S+# (.*?)\n  -> .*? in ([\d.]+) s$",
                              re.MULTILINE | re.DOTALL)
LEAK_SNAPSHOT = re.compile(r"^\s*echo '## (domains|migration trust)'")
INSTALL_FIRST = re.compile(r"^rm -rf /var/tmp/xenhil-build && mkdir ")
INSTALL_LAST = re.compile(r"^rm -rf /var/tmp/xenhil-build && sync")

Interval = tuple[float, float]  # seconds since the epoch


@dataclass
class TestProfile:
    name: str
    status: str
    start: float  # its first fixture's setup
    end: float  # its last fixture's teardown
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return self.end - self.start


@dataclass
class RunProfile:
    tests: list[TestProfile]
    # Time of the run outside its tests: name -> seconds, in the order they came.
    outside: dict[str, float]

    @property
    def in_tests(self) -> float:
        """Seconds in at least one test (a moment read from a transcript may overlap)."""
        return covered((test.start, test.end) for test in self.tests)

    @property
    def summed(self) -> float:
        """The tests' seconds added up: more than in_tests where sessions of several
        hosts ran tests side by side (harness.sessions)."""
        return sum(test.total for test in self.tests)

    def totals(self) -> dict[str, float]:
        return {phase: sum(test.phases.get(phase, 0.0) for test in self.tests)
                for phase in PHASES}


def covered(intervals: Iterable[Interval]) -> float:
    """Seconds covered by at least one of `intervals`."""
    total, reach = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop > reach:
            total += stop - max(start, reach)
            reach = stop
    return total


def exclusive(by_phase: dict[str, list[Interval]]) -> dict[str, float]:
    """Seconds per phase, each moment counted for the first phase of PHASES covering it."""
    seconds: dict[str, float] = {}
    claimed: list[Interval] = []
    for phase in PHASES:
        own = by_phase.get(phase, [])
        seconds[phase] = covered(own + claimed) - covered(claimed)
        claimed += own
    return seconds


def _times(item: dict[str, Any]) -> Interval | None:
    if not item.get("start") or not item.get("stop"):
        return None
    return item["start"] / 1000, item["stop"] / 1000


def _steps(item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for step in item.get("steps", []):
        yield step
        yield from _steps(step)


def step_phase(name: str) -> str | None:
    """The phase a step of this name is time of, if any."""
    return next((phase for phase, pattern in STEP_PHASES if pattern.search(name)), None)


def transcript_intervals(text: str, day: datetime) -> dict[str, list[Interval]]:
    """Install and leak check intervals in a command transcript (harness.remote's
    Transcript.render) of a test that ran on `day` (UTC)."""
    found: dict[str, list[Interval]] = {"install": [], "leak check": []}
    install_from = None
    for match in TRANSCRIPT_ENTRY.finditer(text):
        hours, minutes, seconds, command, duration = match.groups()
        at = day.replace(hour=int(hours), minute=int(minutes), second=int(seconds),
                         microsecond=0)
        if at < day - timedelta(hours=12):  # past midnight
            at += timedelta(days=1)
        start = at.timestamp()
        stop = start + float(duration)
        if LEAK_SNAPSHOT.match(command):
            found["leak check"].append((start, stop))
        elif INSTALL_FIRST.match(command):
            install_from = start
        elif INSTALL_LAST.match(command) and install_from is not None:
            found["install"].append((install_from, stop))
            install_from = None
    return found


def _attachments(item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from item.get("attachments", [])
    for step in _steps(item):
        yield from step.get("attachments", [])


def read_profile(allure_dir: Path, *, run_started: datetime | None = None,
                 run_ended: datetime | None = None,
                 reports_written: datetime | None = None) -> RunProfile:
    """The run's profile from `allure_dir`. The run's own moments (from the results
    database, the report files) add the time before its first test, after its last
    and the report writing."""
    results = [json.loads(path.read_text()) for path in allure_dir.glob("*-result.json")]
    results = [result for result in results if _times(result) is not None]
    results.sort(key=lambda result: result["start"])
    containers = [json.loads(path.read_text())
                  for path in allure_dir.glob("*-container.json")]
    position = {result["uuid"]: index for index, result in enumerate(results)}
    setups: list[list[dict[str, Any]]] = [[] for _ in results]
    teardowns: list[list[dict[str, Any]]] = [[] for _ in results]
    session_end: list[Interval] = []
    for container in containers:
        children = sorted(position[uuid] for uuid in container.get("children", [])
                          if uuid in position)
        if not children:
            continue
        for before in container.get("befores", []):
            times = _times(before)
            if times is None:
                continue
            # the test whose setup ran it: the first child whose call came after it
            index = next((i for i in children if results[i]["start"] / 1000 >= times[0]),
                         children[-1])
            setups[index].append(before)
        for after in container.get("afters", []):
            times = _times(after)
            if times is None:
                continue
            if len(children) > 1:  # a shared fixture ends with its scope
                session_end.append(times)
            else:
                teardowns[children[0]].append(after)
    tests = [_test_profile(result, allure_dir, setups[i], teardowns[i])
             for i, result in enumerate(results)]
    return RunProfile(tests, _outside(tests, session_end, run_started, run_ended,
                                      reports_written))


def _test_profile(result: dict[str, Any], allure_dir: Path, setups: list[dict[str, Any]],
                  teardowns: list[dict[str, Any]]) -> TestProfile:
    call = _times(result)
    assert call is not None
    by_phase: dict[str, list[Interval]] = {phase: [] for phase in PHASES}
    by_phase["body"].append(call)
    items = [result, *setups, *teardowns]
    for fixture in (*setups, *teardowns):
        times = _times(fixture)
        assert times is not None
        phase = FIXTURE_PHASES.get(fixture["name"].split("::")[0], "fixtures")
        by_phase[phase].append(times)
    for item in items:
        for step in _steps(item):
            named, times = step_phase(step.get("name", "")), _times(step)
            if named is not None and times is not None:
                by_phase[named].append(times)
    day = datetime.fromtimestamp(call[0], UTC)
    for phase, intervals in _from_transcripts(items, allure_dir, day).items():
        if not by_phase[phase]:  # a run from before the step was recorded
            by_phase[phase] = intervals
    every = [interval for intervals in by_phase.values() for interval in intervals]
    return TestProfile(result.get("name", "?"), result.get("status", "unknown"),
                       min(start for start, _ in every), max(stop for _, stop in every),
                       exclusive(by_phase))


def _from_transcripts(items: list[dict[str, Any]], allure_dir: Path,
                      day: datetime) -> dict[str, list[Interval]]:
    found: dict[str, list[Interval]] = {"install": [], "leak check": []}
    for item in items:
        for attachment in _attachments(item):
            if not attachment.get("name", "").endswith("commands"):
                continue
            path = allure_dir / attachment["source"]
            if path.is_file():
                for phase, intervals in transcript_intervals(
                        path.read_text(errors="replace"), day).items():
                    found[phase] += intervals
    return found


def _outside(tests: list[TestProfile], session_end: list[Interval],
             run_started: datetime | None, run_ended: datetime | None,
             reports_written: datetime | None) -> dict[str, float]:
    if not tests:
        return {}
    first, last = min(test.start for test in tests), max(test.end for test in tests)
    session_stop = max([last, *(stop for _, stop in session_end)])
    in_tests = covered((test.start, test.end) for test in tests)
    outside = {}
    if run_started is not None:
        outside["before the first test"] = max(0.0, first - run_started.timestamp())
    outside["between tests"] = (last - first) - in_tests
    outside["shared fixtures' teardown"] = session_stop - last
    if run_ended is not None:
        outside["analysis, lab down"] = max(0.0, run_ended.timestamp() - session_stop)
        if reports_written is not None:
            outside["report writing"] = max(0.0, reports_written.timestamp()
                                            - run_ended.timestamp())
    return outside
