"""The liveness monitor: hung, powered off behind our back, BMC gone; quiet when disarmed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from harness.health import HostBroken, HostHealth, HostHung, HostPoweredOff
from harness.ipmi import BMCError
from harness.liveness import LivenessMonitor


class FakeHost:
    def __init__(self) -> None:
        self.answers = True
        self.powered = True
        self.bmc_error: str | None = None
        self.console = 0

    def powered_on(self) -> bool:
        if self.bmc_error is not None:
            raise BMCError(self.bmc_error)
        return self.powered


@pytest.fixture
def fake() -> FakeHost:
    return FakeHost()


@pytest.fixture
def health() -> HostHealth:
    return HostHealth("host1")


@pytest.fixture
def monitor(fake: FakeHost, health: HostHealth) -> Iterator[LivenessMonitor]:
    monitor = LivenessMonitor("host1", health, ssh_answers=lambda: fake.answers,
                              powered_on=fake.powered_on, console_bytes=lambda: fake.console,
                              hang_timeout=1.0, probe_interval=0.1, bmc_interval=0.2)
    monitor.start()
    try:
        yield monitor
    finally:
        monitor.stop()


def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "condition not met in time"
        time.sleep(0.05)
    return time.monotonic() - start


def test_host_that_stops_answering_is_hung_after_the_hang_timeout(
        fake: FakeHost, health: HostHealth, monitor: LivenessMonitor) -> None:
    monitor.arm()
    time.sleep(0.5)
    assert health.current is None  # answering
    fake.answers = False
    seconds = wait_until(lambda: health.current is not None)
    assert isinstance(health.current, HostHung)
    assert "no com1 output" in str(health.current)
    assert 0.8 <= seconds <= 2.5


def test_host_printing_on_com1_gets_three_hang_timeouts(
        fake: FakeHost, health: HostHealth, monitor: LivenessMonitor) -> None:
    monitor.arm()
    fake.answers = False
    printing = threading.Event()

    def print_on_com1() -> None:
        while not printing.wait(0.05):
            fake.console += 10

    threading.Thread(target=print_on_com1, daemon=True).start()
    try:
        seconds = wait_until(lambda: health.current is not None, timeout=8)
    finally:
        printing.set()
    assert isinstance(health.current, HostHung)
    assert "while com1 still prints" in str(health.current)
    assert seconds >= 2.5


def test_output_before_the_freeze_does_not_delay_the_verdict(
        fake: FakeHost, health: HostHealth, monitor: LivenessMonitor) -> None:
    monitor.arm()
    fake.console = 100  # the last lines before the machine froze
    fake.answers = False
    seconds = wait_until(lambda: health.current is not None)
    assert "no com1 output" in str(health.current)
    assert seconds <= 2.5


def test_power_off_nobody_asked_for(fake: FakeHost, health: HostHealth,
                                    monitor: LivenessMonitor) -> None:
    monitor.arm()
    fake.powered = False
    wait_until(lambda: health.current is not None)
    assert isinstance(health.current, HostPoweredOff)


def test_disarmed_host_may_be_off_and_silent(fake: FakeHost, health: HostHealth,
                                             monitor: LivenessMonitor) -> None:
    monitor.arm()
    monitor.disarm()  # e.g. a test powers it off on purpose
    fake.powered, fake.answers = False, False
    time.sleep(2.0)
    assert health.current is None


def test_dead_bmc_breaks_the_host_even_while_it_runs(
        fake: FakeHost, health: HostHealth, monitor: LivenessMonitor) -> None:
    fake.bmc_error = "host1: BMC 127.0.1.1:6230 'ipmitool chassis power status' failed"
    wait_until(lambda: health.broken is not None)
    assert isinstance(health.current, HostBroken)
    assert "BMC 127.0.1.1:6230" in str(health.broken)
    health.clear()  # a power cycle cannot help
    assert health.broken is not None and health.current is not None
