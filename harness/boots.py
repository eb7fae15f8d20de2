"""Installing and booting a build on several hosts at once.

Most of a boot is waiting on a machine (package installs, firmware, Xen, dom0), so the
hosts a session needs are installed and booted side by side (harness.side_by_side). A
boot that somehow never returns makes its host broken instead of blocking the run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from functools import partial
from typing import Any, Protocol

from labgrid.step import Steps

from .build import XenBuild
from .health import HostHealth
from .side_by_side import leave_unfinished_alone, side_by_side

log = logging.getLogger(__name__)


class _StepsPerThread(Steps):
    """labgrid keeps one stack of running steps for the whole process and asserts that
    a step ending is the innermost one; two hosts' power cycles in threads interleave
    their steps. Each thread gets a stack of its own (labgrid is pinned)."""

    _threads = threading.local()

    @property
    def _stack(self) -> list[Any]:
        stack: list[Any] | None = getattr(self._threads, "stack", None)
        if stack is None:
            stack = self._threads.stack = []
        return stack

    @_stack.setter
    def _stack(self, stack: list[Any]) -> None:
        self._threads.stack = stack


def _steps_per_thread() -> None:
    from labgrid.step import steps
    if not isinstance(steps, _StepsPerThread):
        running = steps.__dict__.pop("_stack", [])  # this thread's steps so far
        steps.__class__ = _StepsPerThread
        steps._stack = running


_steps_per_thread()


class Bootable(Protocol):
    name: str
    health: HostHealth

    def boot_build(self, build: XenBuild) -> object: ...


class TimeoutTable(Protocol):
    def __getitem__(self, name: str, /) -> float: ...


def boot_deadline(timeouts: TimeoutTable) -> float:
    """What one `Host.boot_build` may take at most: a power cycle into the installed
    system, the install, a power cycle into Xen, and some commands, each at its own
    deadline."""
    return (2 * timeouts["ssh_after_power_cycle"] + timeouts["package_install"]
            + 20 * timeouts["command"])


def boot_together(hosts: Sequence[Bootable], build: XenBuild,
                  deadline: float) -> dict[str, BaseException]:
    """Install and boot `build` on every host at once; the errors, by host name (a host
    without one is booted). A boot still running after `deadline` seconds leaves its
    host broken: nothing else may use it while that thread may still act on it."""
    errors = side_by_side({host.name: partial(host.boot_build, build) for host in hosts},
                          deadline, "boot")
    leave_unfinished_alone(errors, {host.name: host for host in hosts},
                           {host.name: f"installing and booting {build.label}"
                            for host in hosts}, deadline)
    return errors
