"""The plugin's verdicts: a fault of a host the test used is the test's exception and
first message; a fault of a host it did not use, or none, leaves its own failure."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness import evidence
from harness.console_watch import ConsoleCrash, ConsoleEvent, Severity
from harness.health import HostHealth, HostHung
from harness.plugin import EVIDENCE
from harness.remote import SSHUnavailable, Transcript
from harness.verdicts import TEST_STARTED, BundleLink, FailureBurst, _fault_first

CRASH = ConsoleEvent("linux_panic", "[   40.225452] Kernel panic - not syncing: sysrq "
                     "triggered crash", Severity.FATAL)


@dataclass
class FakeLiveness:
    due: float = 0.0

    def verdict_due(self) -> float:
        return self.due


@dataclass
class FakeHost:
    name: str
    health: HostHealth = field(init=False)
    liveness: FakeLiveness = field(default_factory=FakeLiveness)

    def __post_init__(self) -> None:
        self.health = HostHealth(self.name)


@dataclass
class FakeRun:
    hosts: dict[str, FakeHost]


@dataclass
class FakeEvidence:
    run: FakeRun
    transcripts: dict[str, Transcript]


@dataclass
class FakeCallSpec:
    params: dict[str, Any]


class FakeItem:
    def __init__(self, run: FakeRun, uses: str) -> None:
        self.stash = pytest.Stash()
        self.stash[EVIDENCE] = FakeEvidence(run, {name: Transcript() for name in run.hosts})
        self.stash[TEST_STARTED] = time.monotonic()
        self.callspec = FakeCallSpec({"xen_host": uses})
        self.funcargs: dict[str, Any] = {}


class FakeOutcome:
    def __init__(self, error: BaseException) -> None:
        self.excinfo = (type(error), error, None)
        self.forced: BaseException | None = None

    def force_exception(self, error: BaseException) -> None:
        self.forced = error


@pytest.fixture
def run() -> FakeRun:
    return FakeRun({"vlab1": FakeHost("vlab1"), "vlab2": FakeHost("vlab2")})


def crash(host: FakeHost) -> ConsoleCrash:
    fault = ConsoleCrash(CRASH, CRASH.line, host.name)
    host.health.fault(fault)
    return fault


def test_crash_on_the_tests_host_replaces_its_symptom(run: FakeRun) -> None:
    item = FakeItem(run, uses="vlab1")
    fault = crash(run.hosts["vlab1"])
    outcome = FakeOutcome(AssertionError("dom0 gets no ping reply from the guest"))
    _fault_first(item, outcome)  # type: ignore[arg-type]
    assert outcome.forced is fault
    assert isinstance(outcome.forced, AssertionError)  # a product failure: failed
    assert any("then the test itself saw: AssertionError: dom0 gets no ping reply" in note
               for note in fault.__notes__)


def test_crash_on_another_host_is_not_this_tests_verdict(run: FakeRun) -> None:
    item = FakeItem(run, uses="vlab1")
    crash(run.hosts["vlab2"])
    outcome = FakeOutcome(AssertionError("a real failure of this test"))
    _fault_first(item, outcome)  # type: ignore[arg-type]
    assert outcome.forced is None


def test_fault_before_the_test_began_is_not_its_verdict(run: FakeRun) -> None:
    crash(run.hosts["vlab1"])
    item = FakeItem(run, uses="vlab1")  # started after the crash
    outcome = FakeOutcome(AssertionError("own failure"))
    _fault_first(item, outcome)  # type: ignore[arg-type]
    assert outcome.forced is None


def test_ssh_failure_waits_for_the_monitors_verdict(run: FakeRun) -> None:
    host = run.hosts["vlab1"]
    host.liveness.due = time.monotonic() + 5  # the monitor decides within 5 s
    item = FakeItem(run, uses="vlab1")
    hung = HostHung("vlab1: host hung: no SSH answer for 60 s and no com1 output for 60 s")
    threading.Timer(1.0, host.health.fault, args=(hung,)).start()
    start = time.monotonic()
    outcome = FakeOutcome(SSHUnavailable("vlab1: no answer within 60 s to starting `true`"))
    _fault_first(item, outcome)  # type: ignore[arg-type]
    assert outcome.forced is hung
    assert 0.9 < time.monotonic() - start < 3


def test_test_ended_by_the_fault_itself_is_left_as_it_is(run: FakeRun) -> None:
    item = FakeItem(run, uses="vlab1")
    fault = crash(run.hosts["vlab1"])
    outcome = FakeOutcome(fault)
    start = time.monotonic()
    _fault_first(item, outcome)  # type: ignore[arg-type]
    assert outcome.forced is None
    assert time.monotonic() - start < 0.5  # no grace waited


def test_evidence_actions_are_named_steps() -> None:
    steps: list[str] = []

    class Recorder(evidence.LogSink):
        def step(self, title: str) -> Any:
            steps.append(title)
            return super().step(title)

    class Guest:
        name = "xenhil-a-1"

        @evidence.action("destroy {self.name}")
        def destroy(self) -> str:
            return "gone"

    evidence.install(Recorder())
    try:
        assert Guest().destroy() == "gone"
    finally:
        evidence.install(None)
    assert steps == ["destroy xenhil-a-1"]


def test_com1_slice_of_a_test_is_capped_to_its_end(tmp_path: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import plugin
    from harness.com1 import Com1Recorder
    from harness.console_transport import RawTCPPort
    from tests.unit.test_com1 import ConsoleServer, wait_for

    attached: dict[str, str] = {}
    monkeypatch.setattr(plugin.allure, "attach",
                        lambda text, name, attachment_type: attached.__setitem__(name, text))
    monkeypatch.setattr(plugin, "COM1_SLICE_LIMIT", 1000)
    server = ConsoleServer()
    try:
        with Com1Recorder(RawTCPPort("127.0.0.1", server.port), tmp_path / "vlab1.log") as com1:
            server.wait_client()
            start = com1.mark()
            server.send(b"".join(b"line %04d\n" % n for n in range(500)))
            wait_for(lambda: com1.bytes_received >= 5000, "the console output")
            host = type("FakeHost", (), {"com1": com1, "booted": None})()
            run = type("FakeRun", (), {"hosts": {"vlab1": host}})()
            plugin.Evidence(run, {"vlab1": start}, {"vlab1": Transcript()}).attach()
    finally:
        server.close()
    text = attached["vlab1 com1"]
    assert text.startswith("[... ") and "bytes before this are in" in text
    assert text.rstrip().endswith("line 0499")
    assert "line 0000" not in text and len(text) < 1200


def test_a_retest_continues_the_burst_its_run_left(tmp_path: Path) -> None:
    reports = tmp_path / "reports" / "run-1"
    first = FailureBurst()
    first.open(reports, retest=False)
    link = BundleLink(reports / "support" / "vlab1" / "vlab1-1", "support bundle of vlab1")
    first.add("vlab1", link)

    retest = FailureBurst()
    retest.open(reports, retest=True)
    assert retest.bundles == {"vlab1": link}
    # A fresh session of the same run id starts its own burst.
    again = FailureBurst()
    again.open(reports, retest=False)
    assert again.bundles == {}


def test_a_pass_ends_the_burst_for_the_retest_too(tmp_path: Path) -> None:
    first = FailureBurst()
    first.open(tmp_path, retest=False)
    first.add("vlab1", BundleLink(tmp_path / "bundle", "support bundle of vlab1"))
    first.end()
    assert first.bundles == {}

    retest = FailureBurst()
    retest.open(tmp_path, retest=True)
    assert retest.bundles == {}


def test_a_retest_starts_afresh_from_an_unreadable_burst(tmp_path: Path) -> None:
    (tmp_path / "support").mkdir()
    (tmp_path / "support" / FailureBurst.FILE).write_text('{"vlab1": ')  # cut short
    retest = FailureBurst()
    retest.open(tmp_path, retest=True)
    assert retest.bundles == {}
