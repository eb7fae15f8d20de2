"""Verdicts of the pytest plugin: what a failed, broken or interrupted test reports.

- A host the test used that crashed, hung or broke while it ran decides the verdict:
  the fault is the test's exception and message, its own symptom a note after it;
  the same fault met again by a fixture's cleanup is not a second error.
- A test stopped by Ctrl-C or SIGTERM is reported broken, "interrupted".
- On failure: Xen's debug-key dump on com1, dom0's guest and network state, a support
  bundle of every host the test used (once per host per burst of failures; the run's
  retest of regressed tests continues the burst its last tests left); then the test's
  evidence (com1 slices, transcripts, boot timeline, figures) is attached.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import allure
import allure_commons.model2
import allure_commons.utils
import pytest

from .guests.guest import GuestFactory
from .host import Host
from .network import diagnosis
from .plugin import EVIDENCE, FIGURES, Evidence, XenhilRun
from .remote import SSHUnavailable
from .support import collect

log = logging.getLogger(__name__)


def _hosts_used(item: pytest.Item, run: XenhilRun) -> list[Host]:
    """The hosts a test used: parametrized with, ran a command on, or made guests on."""
    callspec = getattr(item, "callspec", None)
    named = set(callspec.params.values()) if callspec is not None else set()
    named = {part for value in named for part in (value if isinstance(value, tuple)
                                                   else (value,))}
    evidence = item.stash.get(EVIDENCE, None)
    factory = getattr(item, "funcargs", {}).get("guests")
    guest_hosts = {host.name for host in factory.hosts} \
        if isinstance(factory, GuestFactory) else set()
    return [host for name, host in run.hosts.items()
            if name in named or name in guest_hosts
            or (evidence is not None and evidence.transcripts[name].entries)]


# How long a failed test waits for the fault behind its symptom (a crash line on com1
# arrives just after the SSH connection it killed fails).
FAULT_GRACE = 1.0
TEST_STARTED = pytest.StashKey[float]()
CALL_FAILED_BY = pytest.StashKey[BaseException]()


def _fault_first(item: pytest.Item, outcome: Any) -> None:
    """A host the test used crashed, hung or broke while the test ran: that fault is
    the test's verdict and message, whatever symptom the test itself ran into."""
    excinfo = outcome.excinfo
    evidence = item.stash.get(EVIDENCE, None)
    if excinfo is None or evidence is None:
        return
    error = excinfo[1]
    if isinstance(error, (pytest.skip.Exception, KeyboardInterrupt)):
        return
    if any(error is host.health.current or error is host.health.broken
           for host in evidence.run.hosts.values()):
        return  # the test already ended by a host's fault
    since = item.stash.get(TEST_STARTED, 0.0)
    hosts = _hosts_used(item, evidence.run)
    deadline = time.monotonic() + FAULT_GRACE
    if isinstance(error, SSHUnavailable):
        # A host that does not answer: its monitor's verdict (hung, powered off) is
        # the reason, and worth waiting for.
        deadline = max([deadline, *(host.liveness.verdict_due() for host in hosts)])
    while True:
        faults = [fault for host in hosts
                  if (fault := host.health.faulted_since(since)) is not None]
        if faults or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    if not faults or error is faults[0]:
        return
    fault = faults[0]
    fault.add_note(f"then the test itself saw: {type(error).__name__}: "
                   f"{str(error).splitlines()[0] if str(error) else ''}")
    outcome.force_exception(fault)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, None]:
    item.stash[TEST_STARTED] = time.monotonic()
    outcome = yield
    _fault_first(item, outcome)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, None]:
    outcome = yield
    _fault_first(item, outcome)
    if outcome.excinfo is not None:
        item.stash[CALL_FAILED_BY] = outcome.excinfo[1]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, Any, None]:
    """The fault that failed the test is not reported a second time as a teardown
    error, when a fixture's cleanup runs into it again."""
    outcome = yield
    failed_by = item.stash.get(CALL_FAILED_BY, None)
    if outcome.excinfo is not None and failed_by is not None \
            and outcome.excinfo[1] is failed_by:
        outcome.force_result(None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, Any, None]:
    """A test stopped by Ctrl-C or SIGTERM is reported broken ("interrupted"), not
    left to allure, which would file an unfinished test as skipped."""
    outcome = yield
    if outcome.excinfo is None or not isinstance(outcome.excinfo[1], KeyboardInterrupt):
        return
    listener = item.config.pluginmanager.get_plugin("allure_listener")
    if listener is None:
        return
    result = listener.allure_logger.get_test(listener._cache.get(item.nodeid))
    if result is not None:
        result.status = "broken"
        result.statusDetails = allure_commons.model2.StatusDetails(
            message="interrupted: the run was stopped (SIGINT or SIGTERM) while this test "
                    "ran; its guests were destroyed and the reports written")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[
        None, Any, None]:
    """After the test body (or a failed setup, e.g. a boot): on failure make Xen dump its
    state to com1, then attach the evidence to the test's result. (Attached from a
    fixture's teardown, allure would file it under the fixture, not the test.)"""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    evidence = item.stash.get(EVIDENCE, None)
    if report.when == "teardown" or (report.when == "setup" and report.passed):
        return
    if report.failed:
        broken = call.excinfo is not None and not call.excinfo.errisinstance(AssertionError)
        item.user_properties.append(("xenhil_outcome", "broken" if broken else "failed"))
        diagnosis_started = allure_commons.utils.now()
        _attach_guest_diagnosis(item)
        if evidence is not None:
            # which hosts crashed, as the failure left them
            down = {name for name, host in evidence.run.hosts.items() if host.needs_recovery}
            _dump_xen_state(evidence.run)
            _support_bundles_after_failure(item, evidence, down)
        _timed_step(item, DIAGNOSIS_STEP, diagnosis_started)
    elif report.when == "call" and report.passed:
        burst = item.config.stash.setdefault(FAILURE_BURST, FailureBurst())
        if evidence is not None:
            burst.open(evidence.run.reports, retest=False)
        burst.end()  # a pass ends the burst of failures, a retest's first test included
    if evidence is not None:
        evidence.attach()
    measured = item.stash.get(FIGURES, None)
    if measured is not None and measured.values and report.when == "call":
        allure.attach(measured.render(), name="figures",
                      attachment_type=allure.attachment_type.TEXT)


DIAGNOSIS_STEP = "diagnose the failure: guests and network, Xen state dump, support bundles"


def _timed_step(item: pytest.Item, title: str, started_ms: int) -> None:
    """A step of the test's result from `started_ms` until now, for where the run's time
    went (harness/run_profile.py). Added afterwards, not opened around the work: what
    the work attaches stays on the result, where readers of the report look for it."""
    listener = item.config.pluginmanager.get_plugin("allure_listener")
    if listener is None:
        return
    result = listener.allure_logger.get_test(listener._cache.get(item.nodeid))
    if result is not None:
        result.steps.append(allure_commons.model2.TestStepResult(
            name=title, status="passed", start=started_ms, stop=allure_commons.utils.now()))


def _attach_guest_diagnosis(item: pytest.Item) -> None:
    """With the test's guests still there: dom0's guest and network state and the
    hotplug logs of every host they ran on."""
    factory = getattr(item, "funcargs", {}).get("guests")
    if not isinstance(factory, GuestFactory):
        return
    for host in sorted(factory.hosts, key=lambda host: host.name):
        if host.health.current is not None:
            continue  # nothing answers there; com1 is the evidence
        try:
            text = diagnosis(host)
        except Exception as error:  # the failure itself must still be reported
            text = f"(diagnosis not collected: {error})"
        allure.attach(text, name=f"{host.name} guests and network",
                      attachment_type=allure.attachment_type.TEXT)


def _dump_xen_state(run: XenhilRun) -> None:
    for host in run.hosts.values():
        if host.booted is not None and host.com1.connected:
            log.info("%s: sending Xen debug keys for the failure dump", host.name)
            host.dump_xen_state()


@dataclass(frozen=True)
class BundleLink:
    """A support bundle as the later failures of its burst link it."""

    directory: Path
    summary: str


class FailureBurst:
    """The support bundle of each host in the current burst of failed tests; a passed
    test ends the burst. It is kept in reports/<run-id>/support/ too: the run's retest
    of regressed tests (--attempt 2) follows its last tests with nothing in between, so
    it continues their burst instead of collecting the same hosts' state again."""

    FILE = "failure-burst.json"

    def __init__(self) -> None:
        self.bundles: dict[str, BundleLink] = {}
        self.path: Path | None = None

    def open(self, reports: Path, *, retest: bool) -> None:
        """Where the burst is kept; a retest starts from what the first session left."""
        if self.path is not None:
            return
        self.path = reports / "support" / self.FILE
        if retest and self.path.is_file():
            try:
                kept = json.loads(self.path.read_text())
                self.bundles = {host: BundleLink(Path(link["directory"]), link["summary"])
                                for host, link in kept.items()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
                log.warning("%s: not continuing the burst of failures: %s", self.path, error)

    def add(self, host: str, link: BundleLink) -> None:
        self.bundles[host] = link
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(
                {name: {"directory": str(kept.directory), "summary": kept.summary}
                 for name, kept in self.bundles.items()}, indent=1))

    def end(self) -> None:
        self.bundles = {}
        if self.path is not None:
            self.path.unlink(missing_ok=True)


FAILURE_BURST = pytest.StashKey[FailureBurst]()


def _support_bundles_after_failure(item: pytest.Item, evidence: Evidence,
                                   down: set[str]) -> None:
    """A support bundle from each host the failed test used (ran a command on, or was
    parametrized with), once per host per burst of failures, within the table's
    `support_after_failure`; linked from the test's report. A collection that fails is
    noted beside the test's own failure, never instead of it."""
    burst = item.config.stash.setdefault(FAILURE_BURST, FailureBurst())
    burst.open(evidence.run.reports, retest=item.config.getoption("--attempt", default=1) > 1)
    deadline = None
    for host in _hosts_used(item, evidence.run):
        if (link := burst.bundles.get(host.name)) is not None:
            allure.attach(f"collected after an earlier failure of this burst:\n"
                          f"{link.summary}\n", name=f"{host.name} support bundle",
                          attachment_type=allure.attachment_type.TEXT)
            allure.dynamic.link(link.directory.as_uri(), name=f"{host.name} support bundle")
            continue
        if host.name in down:  # crashed, hung, off or its boot broke: no SSH
            fault = host.health.current
            note = ("host crashed, hung, was powered off or its boot broke; its com1 log "
                    "is the evidence"
                    + (f" ({str(fault).splitlines()[0]})" if fault is not None else ""))
        else:
            deadline = deadline or time.monotonic() + host.timeouts["support_after_failure"]
            remaining = min(deadline - time.monotonic(), host.timeouts["support_collect"])
            try:
                if remaining <= 0:
                    raise TimeoutError("no time left of support_after_failure")
                bundle = collect(host.remote, host.spec.family,
                                 evidence.run.reports / "support" / host.name,
                                 timeout=remaining)
            except Exception as error:  # the test's own failure stays what is reported
                note = f"{type(error).__name__}: {error}"
            else:
                burst.add(host.name, BundleLink(bundle.directory, bundle.summary()))
                item.user_properties.append((f"support_bundle_{host.name}",
                                             str(bundle.directory)))
                allure.attach(bundle.render(), name=f"{host.name} support bundle",
                              attachment_type=allure.attachment_type.TEXT)
                allure.dynamic.link(bundle.directory.as_uri(),
                                    name=f"{host.name} support bundle")
                continue
        log.warning("%s: no support bundle for this failure: %s", host.name, note)
        allure.attach(f"not collected: {note}\n", name=f"{host.name} support bundle (none)",
                      attachment_type=allure.attachment_type.TEXT)
