"""Hosts shared between runs: each host is locked for the whole run that uses it.

With a labgrid coordinator (the lab file's `xenhil.coordinator`, or --coordinator),
every host is a place there, and runs on any machine queue for it. Without one, a lock
file per host keeps two runs on this machine apart.

Hosts are always taken in one order (by place name) and given back in the reverse
order: the coordinator reserves one place at a time, so two runs each taking a pair
in their own order could each hold one host and wait for the other forever.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from types import FrameType

from ..errors import ConfigError, HarnessError
from ..lab import Lab, coordinator_address
from ..paths import cache_dir
from .base import Holder, HostBusy, HostLock, WaitReporter, default_owner
from .coordinator import Coordinator, CoordinatorHostLock, sync_places
from .local import LocalHostLock

__all__ = ["Coordinator", "Holder", "HostBusy", "HostLock", "coordinator_of", "hold_hosts",
           "host_locks", "lock", "sync_places"]

log = logging.getLogger(__name__)


def host_locks(lab: Lab, hosts: Iterable[str] | None = None, *,
               coordinator: str | None = None, owner: str | None = None,
               run_id: str | None = None) -> list[HostLock]:
    """The locks of `hosts` (all the lab's when None): through `coordinator` (HOST:PORT),
    else the lab file's, else local lock files under $XENHIL_CACHE/locks."""
    specs = lab.select(list(hosts) if hosts is not None else None)
    owner = owner or default_owner()
    address = coordinator_of(lab, coordinator)
    if address is not None:
        client = Coordinator(address, owner)
        return [CoordinatorHostLock(spec.name, spec.place, client) for spec in specs]
    return [LocalHostLock(spec.name, spec.place, cache_dir() / "locks", owner, run_id)
            for spec in specs]


def coordinator_of(lab: Lab, override: str | None) -> str | None:
    """HOST:PORT of the coordinator: `override` (--coordinator), else the lab file's."""
    if override is None:
        return lab.coordinator
    try:
        return coordinator_address(override)
    except ValueError as error:
        raise ConfigError(f"--coordinator: {error}") from None


@contextlib.contextmanager
def lock(locks: Iterable[HostLock], wait_minutes: float) -> Iterator[list[HostLock]]:
    """Hold every lock of `locks` inside the block, taken in place order, all within
    `wait_minutes`; given back in reverse order however the block ends."""
    ordered = sorted(locks, key=lambda host_lock: host_lock.place)
    deadline = time.monotonic() + wait_minutes * 60
    taken: list[HostLock] = []
    locked: list[HostLock] = []
    try:
        for host_lock in ordered:
            taken.append(host_lock)  # first: an acquire cut short is undone as well
            host_lock.acquire(deadline, WaitReporter(host_lock, wait_minutes))
            locked.append(host_lock)
            log.info("%s locked for this run at %s", host_lock.description, utc_now())
        yield ordered
    finally:
        for host_lock in reversed(taken):
            try:
                host_lock.release()
                if host_lock in locked:
                    log.info("%s given back at %s", host_lock.description, utc_now())
            except HarnessError as error:
                # the other locks are still given back; this one needs a hand
                log.error("%s: not released (%s); free it with `xenhil lab release %s`",
                          host_lock.description, error, host_lock.host)


def utc_now() -> str:
    # to the microsecond: who held a shared host when is compared with its BMC's log
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@contextlib.contextmanager
def hold_hosts(lab: Lab, hosts: Iterable[str] | None, wait_minutes: float,
               coordinator: str | None = None, *,
               run_id: str | None = None) -> Iterator[list[HostLock]]:
    """Lock the run's hosts for as long as the block runs (see lock()). SIGTERM ends
    the block like Ctrl-C where nothing else handles it, so the locks are given back."""
    with _sigterm_interrupts(), lock(host_locks(lab, hosts, coordinator=coordinator,
                                                run_id=run_id), wait_minutes) as held:
        yield held


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield  # only the main thread gets signals; a handler set there stays in charge
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
