"""Booting several hosts at once (harness.boots), with stand-ins for hosts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from labgrid.step import step, steps

from harness.boots import boot_deadline, boot_together
from harness.build import Package, XenBuild
from harness.health import HostBroken, HostHealth
from harness.timeouts import Timeouts

BUILD = XenBuild("test", (Package(Path("xen.deb"), "xen-hypervisor-4.17-amd64", "4.17.7-1",
                                  "amd64", "deb"),))


class FakeHost:
    def __init__(self, name: str, started: threading.Barrier, seconds: float = 0.0,
                 error: BaseException | None = None) -> None:
        self.name = name
        self.health = HostHealth(name)
        self.started = started
        self.seconds = seconds
        self.error = error
        self.booted: XenBuild | None = None

    def boot_build(self, build: XenBuild) -> None:
        self.started.wait(timeout=5)  # every host's boot is under way at once
        time.sleep(self.seconds)
        if self.error is not None:
            raise self.error
        self.booted = build


def test_hosts_boot_side_by_side() -> None:
    started = threading.Barrier(2)
    hosts = [FakeHost("vlab1", started), FakeHost("vlab2", started)]
    assert boot_together(hosts, BUILD, deadline=30) == {}
    # One after the other, the first would have waited in vain for the second.
    assert not started.broken
    assert [host.booted for host in hosts] == [BUILD, BUILD]


def test_a_failed_boot_is_returned_and_the_other_host_still_boots() -> None:
    started = threading.Barrier(2)
    crash = RuntimeError("vlab2: dom0 panicked during boot")
    hosts = [FakeHost("vlab1", started), FakeHost("vlab2", started, error=crash)]
    errors = boot_together(hosts, BUILD, deadline=30)
    assert errors == {"vlab2": crash}
    assert hosts[0].booted == BUILD and hosts[1].booted is None
    assert hosts[1].health.broken is None  # a product failure is not lab breakage


def test_a_boot_that_never_returns_leaves_its_host_broken() -> None:
    started = threading.Barrier(2)
    hosts = [FakeHost("vlab1", started), FakeHost("vlab2", started, seconds=30)]
    begun = time.monotonic()
    errors = boot_together(hosts, BUILD, deadline=1)
    assert time.monotonic() - begun < 5
    assert isinstance(errors["vlab2"], HostBroken)
    assert "did not end within 1 s" in str(errors["vlab2"])
    assert hosts[1].health.broken is errors["vlab2"]
    assert "vlab1" not in errors and hosts[0].booted == BUILD


def test_the_deadline_covers_two_power_cycles_and_the_install() -> None:
    timeouts = Timeouts(factor=2.0)
    assert boot_deadline(timeouts) == 2 * 1200 + 1200 + 20 * 120


def test_labgrid_steps_of_two_threads_may_interleave() -> None:
    """Two power cycles at once: the first to start ends while the other still runs,
    which labgrid's single stack of steps refuses (AssertionError in Steps.pop)."""
    first_inside, second_inside, second_may_end = (threading.Event() for _ in range(3))

    @step(title="transition")
    def first() -> None:
        first_inside.set()
        second_inside.wait(timeout=5)

    def second() -> None:
        first_inside.wait(timeout=5)
        inner()

    @step(title="transition")
    def inner() -> None:
        second_inside.set()
        second_may_end.wait(timeout=5)

    errors: list[BaseException] = []

    def run(transition: Callable[[], None]) -> None:
        try:
            transition()
        except BaseException as error:  # the test reports it
            errors.append(error)

    threads = [threading.Thread(target=run, args=(transition,)) for transition in
               (first, second)]
    for thread in threads:
        thread.start()
    threads[0].join(10)  # first ends while second is inside its step
    second_may_end.set()
    threads[1].join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert steps.get_current() is None  # this thread's stack is untouched
