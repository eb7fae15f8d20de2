"""com1 recorder: the one client of a host's serial console, from before power-on to the end.

A host's console (its com1, or whichever UART the lab file names) is reached through a
transport of harness/console_transport.py: a raw TCP port (a QEMU chardev socket server
in the virtual lab, ser2net/conserver on real hosts), RFC 2217, a local serial device or
IPMI Serial-over-LAN. Each serves one client at a time. A `Com1Recorder` is that client
for the whole session, so no console output is lost between tests or reboots:

- a daemon thread connects, reads and reconnects after a drop or a failed connect
  (backoff 0.2 s doubling to 2 s) until `stop()`;
- `<log>` (e.g. reports/<run-id>/com1/<host>.log) gets every byte as it arrives, flushed
  per read, each line prefixed `2026-11-25T21:40:48.123Z | ` when its first byte arrives;
  CRs directly before a newline are dropped there (Xen and hvc0 end lines in "\\r\\r\\n");
- `<log>.raw` (same name, suffix .raw) gets the exact bytes, comparable with QEMU's own
  chardev logfile;
- gaps are never silent: start, connect, connect failures, disconnects, reconnects and
  stop are marker lines `2026-...Z # com1 disconnected: <reason>` (`#`, not `|`);
- `subscribe()` hands out `Com1Stream`s (harness/com1_stream.py): independent, bounded
  readers of the bytes that arrive after subscribing, with a fail-fast `expect()`;
- `mark()` / `text_since()` cut the log into per-test evidence slices.

A started recorder is registered under its console's endpoint so that drivers find it
with `recorder_for()`; a second recorder for the same console is refused, as the console
would serve only one of them. Data written to the console is not logged: it can be a password.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from harness.com1_stream import STREAM_LIMIT, Com1Stream
from harness.console_transport import READ_WAIT, ConsoleClosed, ConsoleConnection, ConsolePort

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.2  # s, first wait after a failed connect or a drop
BACKOFF_MAX = 2.0  # s
CONNECT_TIMEOUT = 5.0  # s, for a console server that does not answer at all


class Com1NotConnected(ConnectionError):
    """write() while the console is not connected (or the write failed)."""


@dataclass(frozen=True)
class Com1Mark:
    """A position in a recorder's .log (byte offset) and when it was taken."""

    log_path: Path
    offset: int
    time: datetime


def _utc_stamp(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


_registry: dict[str, Com1Recorder] = {}
_registry_lock = threading.Lock()


def recorder_for(endpoint: str) -> Com1Recorder:
    """The running recorder of the console `endpoint` (its ConsolePort's endpoint)."""
    with _registry_lock:
        recorder = _registry.get(endpoint)
    if recorder is None:
        raise LookupError(
            f"no com1 recorder is running for {endpoint}: start a Com1Recorder for the "
            "host before powering it on or activating its console"
        )
    return recorder


class Com1Recorder:
    """Records one host's com1 for the whole session; see the module docstring."""

    def __init__(
        self,
        console: ConsolePort,
        log_path: str | os.PathLike[str],
        *,
        name: str | None = None,
        backoff_min: float = BACKOFF_MIN,
        backoff_max: float = BACKOFF_MAX,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.console = console
        self.endpoint = console.endpoint
        self.name = name or self.endpoint
        self.log_path = Path(log_path)
        self.raw_path = self.log_path.with_suffix(".raw")
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._connect_timeout = connect_timeout
        # _lock: files, positions, subscribers, state. _conn_lock: the connection for write().
        self._lock = threading.Lock()
        self._conn_lock = threading.Lock()
        self._conn: ConsoleConnection | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self._stopped = False
        self._log: BinaryIO | None = None
        self._raw: BinaryIO | None = None
        self._log_pos = 0
        self._at_line_start = True
        self._pending_cr = 0  # CRs at the end of the last read, written once the next byte shows
        self._bytes = 0
        self._down_reason = "not connected yet"
        self._streams: list[Com1Stream] = []

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Com1Recorder:
        """Open the files and start reading; call before the host is powered on."""
        if self._started or self._stopped:
            raise RuntimeError(f"com1 recorder {self.name} cannot start twice")
        with _registry_lock:
            other = _registry.get(self.endpoint)
            if other is not None:
                raise RuntimeError(
                    f"com1 {self.endpoint} is already recorded by {other.name}; "
                    "a console port serves one client"
                )
            _registry[self.endpoint] = self
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            # Append: a restarted harness must not wipe what an earlier recorder wrote.
            self._log = open(self.log_path, "ab")  # noqa: SIM115
            self._raw = open(self.raw_path, "ab")  # noqa: SIM115
        except BaseException:
            self._unregister()
            raise
        self._log_pos = self._log.tell()
        self._started = True
        self._marker(f"com1 recorder started for {self.endpoint} ({self.name})")
        self._thread = threading.Thread(target=self._run, name=f"com1-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reading, mark the end, close the connection and files. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stop.set()
        if self._thread is not None:
            # The reader waits READ_WAIT s per read, a connect at most connect_timeout.
            self._thread.join(self._connect_timeout + 5)
            if self._thread.is_alive():
                log.warning("%s: com1 reader thread did not stop", self.name)
        if self._started:
            self._marker(f"com1 recorder stopped after {self._bytes} bytes")
        with self._lock:
            streams, self._streams = self._streams, []
            for f in (self._log, self._raw):
                if f is not None:
                    f.close()
        for stream in streams:
            stream._close()
        self._unregister()

    def _unregister(self) -> None:
        with _registry_lock:
            if _registry.get(self.endpoint) is self:
                del _registry[self.endpoint]

    def __enter__(self) -> Com1Recorder:
        return self if self._started else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- state -----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def bytes_received(self) -> int:
        return self._bytes

    def _state_text(self) -> str:
        if self.connected:
            return "com1 connected"
        return f"com1 NOT connected ({self._down_reason})"

    # -- console I/O -----------------------------------------------------------------------

    def write(self, data: bytes) -> int:
        """Send bytes to the console (keystrokes, Xen debug keys); returns len(data)."""
        with self._conn_lock:
            conn = self._conn
            if conn is None:
                raise Com1NotConnected(
                    f"cannot write to com1 of {self.name}: not connected ({self._down_reason})"
                )
            try:
                conn.write(data)
            except OSError as exc:
                raise Com1NotConnected(f"write to com1 of {self.name} failed: {exc}") from exc
        return len(data)

    def subscribe(self, limit: int = STREAM_LIMIT) -> Com1Stream:
        """A new reader of every byte received from now on (at most `limit` unread)."""
        stream = Com1Stream(self, limit)
        with self._lock:
            if self._stopped:
                raise RuntimeError(f"com1 recorder {self.name} is stopped")
            self._streams.append(stream)
        return stream

    def _unsubscribe(self, stream: Com1Stream) -> None:
        with self._lock:
            if stream in self._streams:
                self._streams.remove(stream)

    # -- evidence slices -------------------------------------------------------------------

    def mark(self) -> Com1Mark:
        """The current end of the .log, to slice from or to with text_since()."""
        with self._lock:
            return Com1Mark(self.log_path, self._log_pos, datetime.now(UTC))

    def text_since(self, mark: Com1Mark, until: Com1Mark | None = None) -> str:
        """The timestamped .log between two marks (until now without `until`).

        Slices are exact byte ranges: consecutive slices add up to the whole log.
        """
        for m in (mark, until):
            if m is not None and m.log_path != self.log_path:
                raise ValueError(f"{m} is a mark of {m.log_path}, not of {self.log_path}")
        end = until.offset if until is not None else self.mark().offset
        if end < mark.offset:
            raise ValueError(f"slice ends ({end}) before it starts ({mark.offset})")
        with open(self.log_path, "rb") as f:
            f.seek(mark.offset)
            data = f.read(end - mark.offset)
        return data.decode("utf-8", errors="replace")

    # -- the reader thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # e.g. the disk is full: the end must not be silent
            self._down_reason = f"recorder failed: {exc!r}"
            log.exception("%s: com1 recorder thread failed", self.name)
            with contextlib.suppress(OSError, ValueError):
                self._marker(f"com1 recorder failed: {exc!r}")

    def _loop(self) -> None:
        backoff = self._backoff_min
        down_since: float | None = None  # when the last connection dropped
        failure_marked = False
        while not self._stop.is_set():
            try:
                conn = self.console.connect(self._connect_timeout)
            except OSError as exc:
                self._down_reason = f"connect failed: {exc}"
                if not failure_marked:
                    self._marker(f"com1 connect to {self.endpoint} failed: {exc}; retrying")
                    failure_marked = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._backoff_max)
                continue
            if self._stop.is_set():  # stopped while connecting
                conn.close()
                break
            backoff, failure_marked = self._backoff_min, False
            with self._conn_lock:
                self._conn = conn
            try:
                if down_since is None:
                    self._marker(f"com1 connected to {self.endpoint}")
                else:
                    gap = time.monotonic() - down_since
                    self._marker(f"com1 reconnected after {gap:.1f} s")
                reason = self._pump(conn)
            finally:
                with self._conn_lock:
                    self._conn = None
                conn.close()
            self._down_reason = reason
            down_since = time.monotonic()
            if not self._stop.is_set():
                self._marker(f"com1 disconnected: {reason}")

    def _pump(self, conn: ConsoleConnection) -> str:
        """Read until the connection ends or stop(); returns why it ended."""
        while not self._stop.is_set():
            try:
                data = conn.read(READ_WAIT)
            except ConsoleClosed as closed:
                return str(closed)
            if data:
                self._received(data)
        return "recorder stopped"

    # -- writing the files -----------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        stamp = _utc_stamp(time.time()).encode()
        with self._lock:
            assert self._log is not None and self._raw is not None
            self._raw.write(data)
            self._raw.flush()
            self._write_log(self._format(data, stamp))
            self._bytes += len(data)
            for stream in self._streams:
                stream._feed(data)

    def _format(self, data: bytes, stamp: bytes) -> bytes:
        """The .log form of `data`: a prefix per line, CRs before newlines dropped."""
        data = b"\r" * self._pending_cr + data
        body = data.rstrip(b"\r")
        self._pending_cr = len(data) - len(body)
        out = bytearray()
        pos = 0
        while pos < len(body):
            if self._at_line_start:
                out += stamp + b" | "
                self._at_line_start = False
            newline = body.find(b"\n", pos)
            if newline < 0:
                out += body[pos:]
                break
            out += body[pos:newline].rstrip(b"\r") + b"\n"
            self._at_line_start = True
            pos = newline + 1
        return bytes(out)

    def _marker(self, text: str) -> None:
        line = f"{_utc_stamp(time.time())} # {text}\n".encode()
        with self._lock:
            if not self._at_line_start:
                line = b"\n" + line  # end the partial console line; .raw keeps the truth
            self._pending_cr = 0
            self._at_line_start = True
            self._write_log(line)
        log.info("%s: %s", self.name, text)

    def _write_log(self, data: bytes) -> None:
        assert self._log is not None
        self._log.write(data)
        self._log.flush()
        self._log_pos += len(data)
