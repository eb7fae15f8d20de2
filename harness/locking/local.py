"""A host lock without a coordinator: one lock file per host on this machine.

The lock is flock(2) on the file, so the kernel frees it when its holder dies however
it dies; the file's text (owner, PID, run, since, as JSON) is only for messages. Text
found in a file whose lock was free is what a killed run left: that lock is stale, and
taken over with a warning.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from pathlib import Path

from ..errors import HarnessError
from .base import Holder, HostLock, WaitReporter

log = logging.getLogger(__name__)

POLL_INTERVAL = 1.0


class LocalHostLock(HostLock):
    def __init__(self, host: str, place: str, directory: Path, owner: str,
                 run_id: str | None = None, poll_interval: float = POLL_INTERVAL) -> None:
        super().__init__(host, place)
        self.path = directory / f"{place}.lock"
        self.owner = owner
        self.run_id = run_id
        self.poll_interval = poll_interval
        self._fd: int | None = None

    @property
    def description(self) -> str:
        return f"host {self.host} (lock file {self.path})"

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def acquire(self, deadline: float, waiting: WaitReporter) -> None:
        fd = self._open()
        try:
            while not _try_lock(fd):
                holder = _read(fd)
                if time.monotonic() >= deadline:
                    raise waiting.gave_up(holder)
                waiting.busy(holder)
                time.sleep(max(0.0, min(self.poll_interval, deadline - time.monotonic())))
            left = _read(fd)
            if left is not None:
                log.warning("%s: took over the stale lock left by %s (its process is gone)",
                            self.description, left)
            _write(fd, {"owner": self.owner, "pid": os.getpid(), "run_id": self.run_id,
                        "since": time.time()})
        except BaseException:
            os.close(fd)  # closing frees the flock, if it was taken
            raise
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.ftruncate(fd, 0)  # before unlocking: the next holder finds no stale text
            os.close(fd)

    def holder(self) -> Holder | None:
        fd = self._open()
        try:
            if not _try_lock(fd):
                return _read(fd)
            return None  # free; text in it is a killed run's, see release_left()
        finally:
            os.close(fd)

    def release_left(self) -> Holder | None:
        fd = self._open()
        try:
            if not _try_lock(fd):
                raise HarnessError(f"{self.description} is held by "
                                   f"{_read(fd) or 'a process'}, which still runs: end that "
                                   "run instead (its lock ends with its process)")
            left = _read(fd)
            os.ftruncate(fd, 0)
            return left
        finally:
            os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read(fd: int) -> Holder | None:
    """The holder a lock file names; None when it names none (empty, or half written)."""
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("owner"), str):
        return None
    since = data.get("since")
    return Holder(data["owner"], float(since) if isinstance(since, (int, float)) else None,
                  run_id=data.get("run_id") if isinstance(data.get("run_id"), str) else None)


def _write(fd: int, data: dict[str, object]) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(data).encode(), 0)
