"""What every host lock is: who holds it, since when, and how a waiter says so."""

from __future__ import annotations

import abc
import getpass
import logging
import os
import socket
import time
from dataclasses import dataclass

from ..errors import InfrastructureError

# How long a run waits for hosts another run holds, by default.
DEFAULT_WAIT_MINUTES = 60.0

log = logging.getLogger(__name__)

# How often a waiter repeats who holds the host it waits for.
REPEAT_WAITING_EVERY = 60.0


def this_machine() -> str:
    # labgrid's own overrides, so that labgrid-client and the harness agree on names.
    return os.environ.get("LG_HOSTNAME") or socket.gethostname()


def default_owner() -> str:
    """labgrid's `host/user`, with this process's PID: the run, not only its user."""
    user = os.environ.get("LG_USERNAME") or getpass.getuser()
    return f"{this_machine()}/{user}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@dataclass(frozen=True)
class Holder:
    """Who holds a host: `owner` is `machine/user:pid` when a harness run took it."""

    owner: str
    since: float | None  # seconds since the epoch
    run_id: str | None = None
    reserved_only: bool = False  # allocated to a reservation, not locked yet

    @property
    def machine(self) -> str:
        return self.owner.partition("/")[0]

    @property
    def pid(self) -> int | None:
        _, colon, pid = self.owner.rpartition(":")
        return int(pid) if colon and pid.isdigit() else None

    @property
    def stale(self) -> bool:
        """Held by a process of this machine that is gone (a run that was killed)."""
        return (self.pid is not None and self.machine == this_machine()
                and not pid_alive(self.pid))

    def __str__(self) -> str:
        words = [("reserved by " if self.reserved_only else "") + self.owner]
        if self.run_id:
            words.append(f"(run {self.run_id})")
        if self.since is not None:
            minutes = max(0.0, time.time() - self.since) / 60
            words.append(f"since {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(self.since))}"
                         f" ({minutes:.0f} min ago)")
        if self.stale:
            words.append(f"- stale: its process {self.pid} is gone")
        return " ".join(words)


class HostBusy(InfrastructureError):
    """A host stayed held by another run for as long as we were told to wait."""


class WaitReporter:
    """Says who holds what we wait for: when that changes, and once a minute."""

    def __init__(self, lock: HostLock, wait_minutes: float) -> None:
        self.lock = lock
        self.wait_minutes = wait_minutes
        self._last: tuple[str | None, float] = ("", 0.0)

    def busy(self, holder: Holder | None) -> None:
        said, when = self._last
        now = time.monotonic()
        text = str(holder) if holder else None
        if text == said and now - when < REPEAT_WAITING_EVERY:
            return
        self._last = (text, now)
        log.info("%s is held by %s; waiting (up to %s min)", self.lock.description,
                 text or "a run that has not said who it is yet", f"{self.wait_minutes:g}")

    def gave_up(self, holder: Holder | None) -> HostBusy:
        release = f"`xenhil lab release {self.lock.host}`"
        advice = (f"its process is gone, so free it with {release}" if holder and holder.stale
                  else f"wait longer (--wait MINUTES), or if that run is dead, free it with "
                       f"{release}")
        return HostBusy(f"{self.lock.description} is still held by {holder or 'another run'} "
                        f"after waiting {self.wait_minutes:g} min: {advice}")


class HostLock(abc.ABC):
    """The lock of one host, shared by every run that may use that host."""

    def __init__(self, host: str, place: str) -> None:
        self.host = host
        self.place = place

    @property
    def description(self) -> str:
        return f"host {self.host} (place {self.place})"

    @abc.abstractmethod
    def acquire(self, deadline: float, waiting: WaitReporter) -> None:
        """Take the lock, waiting until `deadline` (time.monotonic()); HostBusy after it."""

    @abc.abstractmethod
    def release(self) -> None:
        """Give back what acquire() took, even part of it (an interrupted acquire)."""

    @abc.abstractmethod
    def holder(self) -> Holder | None:
        """Who holds the host now; None when it is free."""

    @abc.abstractmethod
    def release_left(self) -> Holder | None:
        """Free a lock a killed run left; returns whose it was (None: it was free)."""
