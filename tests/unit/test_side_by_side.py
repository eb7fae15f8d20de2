"""Work on several hosts at once (harness.side_by_side.on_each_host), and the teardown
steps that use it, with stand-ins for hosts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast

import pytest

from harness.health import HostBroken, HostHealth
from harness.host import Host
from harness.leaks import LeakCheck
from harness.remote import CommandResult
from harness.side_by_side import on_each_host


class FakeHost:
    def __init__(self, name: str) -> None:
        self.name = name
        self.health = HostHealth(name)


def hosts(*names: str) -> list[FakeHost]:
    return [FakeHost(name) for name in names]


def test_calls_run_at_once_and_results_come_in_the_order_of_the_hosts() -> None:
    started = threading.Barrier(2)

    def call(host: FakeHost) -> str:
        started.wait(timeout=5)  # one after the other, the first would wait in vain
        time.sleep(0.2 if host.name == "vlab1" else 0.0)  # vlab2 ends first
        return f"{host.name} done"

    results = on_each_host(hosts("vlab1", "vlab2"), call, 30, "test")
    assert not started.broken
    assert list(results.items()) == [("vlab1", "vlab1 done"), ("vlab2", "vlab2 done")]


def test_every_call_runs_to_its_end_then_the_first_error_is_raised() -> None:
    finished = []

    def call(host: FakeHost) -> None:
        if host.name != "vlab3":
            raise RuntimeError(f"{host.name} failed")
        time.sleep(0.2)
        finished.append(host.name)

    with pytest.raises(RuntimeError, match="vlab1 failed"):
        on_each_host(hosts("vlab1", "vlab2", "vlab3"), call, 30, "test")
    assert finished == ["vlab3"]


def test_a_call_that_never_returns_leaves_its_host_broken() -> None:
    pair = hosts("vlab1", "vlab2")
    begun = time.monotonic()
    with pytest.raises(HostBroken, match="vlab2: unpairing did not end within 1 s"):
        on_each_host(pair, lambda host: time.sleep(30 if host.name == "vlab2" else 0), 1,
                     "unpairing")
    assert time.monotonic() - begun < 5
    assert pair[1].health.broken is not None and pair[0].health.broken is None


def test_one_host_is_worked_on_in_the_callers_thread() -> None:
    assert on_each_host(hosts("vlab1"), lambda host: threading.current_thread(), 30,
                        "test") == {"vlab1": threading.current_thread()}


class SnapshotHost(FakeHost):
    """A dom0 whose leak snapshot prints `state` and waits for the other hosts' to be
    under way too."""

    def __init__(self, name: str, started: threading.Barrier) -> None:
        super().__init__(name)
        self.timeouts = {"command": 10.0, "leak_settle": 5.0}
        self.started = started
        self.state = "## domains\n"

    def run(self, command: str, *, timeout: float | None = None,
            check: bool = True) -> CommandResult:
        self.started.wait(timeout=5)
        return CommandResult(self.name, command, 0, self.state, "", datetime.now(UTC), 0.0)

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float,
                 interval: float = 1.0) -> float:
        if not condition():
            raise TimeoutError(f"{self.name}: {what} not within {timeout:.0f} s")
        return 0.0


def test_the_leak_check_looks_at_its_hosts_side_by_side() -> None:
    started = threading.Barrier(2)
    dom0s = [SnapshotHost("vlab1", started), SnapshotHost("vlab2", started)]
    check = LeakCheck()
    check.watch(*cast(list[Host], dom0s))
    dom0s[1].state = "## domains\nxenhil-left 3 256 1 -b---- 1.0\n"
    assert check.leaks() == {"vlab2": {"domains": ["xenhil-left"]}}
    assert not started.broken
