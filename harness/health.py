"""A host's health as the run sees it: crashed, hung, powered off, or broken.

One `HostHealth` per host. The com1 watcher, the liveness monitor and recovery report
to it; every blocking operation on the host (SSH command, SFTP, guest shell, a wait's
sleep) asks it, and its `on_fault` callbacks close the host's SSH transports, so a
crash or a hang ends whatever the test was doing on the host at once, with that fault
as the reason instead of the operation's own symptom minutes later.

A fault lasts until the host is power cycled (`clear`). A broken host (its BMC cannot
power it) stays broken for the rest of the run: its remaining tests end at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from .errors import InfrastructureError, ProductFailure

log = logging.getLogger(__name__)


class HostHung(ProductFailure):
    """The host stopped answering: no SSH and no com1 output for the hang timeout."""


class HostPoweredOff(ProductFailure):
    """The BMC reports the host off, and the harness did not ask for it."""


class HostBroken(InfrastructureError):
    """The lab cannot bring the host back (its BMC fails): no more tests on it."""


class HostHealth:
    """Thread-safe: set from watcher and monitor threads, read by every operation."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._changed = threading.Event()  # set while a fault is recorded
        self._fault: BaseException | None = None
        self._fault_at = 0.0  # monotonic
        self._broken: HostBroken | None = None
        self._on_fault: list[Callable[[], None]] = []

    def on_fault(self, callback: Callable[[], None]) -> None:
        """Run `callback` (e.g. close SSH transports) whenever a fault is recorded."""
        self._on_fault.append(callback)

    def fault(self, error: BaseException) -> None:
        """Record a fault; the first one since the last power cycle is kept."""
        with self._lock:
            if isinstance(error, HostBroken) and self._broken is None:
                self._broken = error
            if self._fault is not None:
                return
            self._fault, self._fault_at = error, time.monotonic()
            self._changed.set()
        log.error("%s", str(error).splitlines()[0])  # faults name their host
        for callback in self._on_fault:
            with contextlib.suppress(Exception):  # a closer failing must not hide the fault
                callback()

    def clear(self) -> None:
        """The host is being power cycled: earlier faults belong to the last boot.
        A broken host stays broken."""
        with self._lock:
            if self._broken is not None:
                return
            self._fault = None
            self._changed.clear()

    @property
    def current(self) -> BaseException | None:
        return self._fault

    def faulted_since(self, since: float) -> BaseException | None:
        """The fault if it was recorded at or after monotonic time `since`."""
        with self._lock:
            return self._fault if self._fault is not None and self._fault_at >= since else None

    @property
    def broken(self) -> HostBroken | None:
        return self._broken

    def check(self) -> None:
        """Raise the host's fault, if it has one."""
        fault = self._fault
        if fault is not None:
            # The same fault ends many operations: each raise gets its own traceback.
            raise fault.with_traceback(None)

    def sleep(self, seconds: float) -> None:
        """Sleep, but raise the host's fault the moment one is recorded."""
        self.check()
        if self._changed.wait(max(seconds, 0.0)):
            self.check()
