"""com1 streams: a recorder's subscribers, and expect() on what they read.

A `Com1Stream` (from `Com1Recorder.subscribe()`, harness/com1.py) gets every byte the
recorder receives after subscribing. Its `expect()` waits for console text with a
ConsoleWatcher alongside, so a crash ends the wait at once, with the dump that follows it
as evidence, instead of when the timeout runs out.
"""

from __future__ import annotations

import codecs
import logging
import re
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from harness.console_watch import ConsoleCrash, ConsoleWatcher

if TYPE_CHECKING:
    from harness.com1 import Com1Recorder

log = logging.getLogger(__name__)

STREAM_LIMIT = 4 * 1024 * 1024  # bytes a subscriber may fall behind before the oldest go
EVIDENCE_QUIET = 0.5  # s of silence that ends the dump after a crash line
DUMP_WAIT = 3.0  # s spent at most collecting that dump (timeouts: console_crash_dump)
_EXPECT_LOOKBACK = 16 * 1024  # chars before new data searched again: longest expected match
_EXPECT_TEXT_LIMIT = 1024 * 1024  # unconsumed chars kept for expect()
_TAIL_CHARS = 16 * 1024  # chars kept for the "last lines seen" of a timeout
_TAIL_LINES = 20


class Com1Timeout(TimeoutError):
    """expect() saw none of the patterns in time; the message shows what it did see."""

    def __init__(
        self, message: str, awaited: list[str], timeout: float, last_lines: list[str]
    ) -> None:
        super().__init__(message)
        self.awaited = awaited
        self.timeout = timeout
        self.last_lines = last_lines



class Com1Stream:
    """An independent reader of a recorder's bytes, with a fail-fast expect().

    Bytes received after subscribe() are buffered (the oldest are dropped beyond `limit`,
    counted in `dropped`; the recorder's files keep everything). read() returns raw bytes;
    expect() consumes them into its own text buffer, so use one or the other on a stream.
    """

    def __init__(self, recorder: Com1Recorder, limit: int) -> None:
        self._recorder = recorder
        self._limit = limit
        self._cond = threading.Condition()
        self._buf = bytearray()
        self._closed = False
        self.dropped = 0
        # expect() state, touched only by the thread that calls expect().
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""
        self._tail = ""

    @property
    def name(self) -> str:
        return self._recorder.name

    def _feed(self, data: bytes) -> None:
        with self._cond:
            if self._closed:
                return
            self._buf += data
            excess = len(self._buf) - self._limit
            if excess > 0:
                if not self.dropped:
                    log.warning("%s: com1 subscriber fell %d bytes behind", self.name, excess)
                del self._buf[:excess]
                self.dropped += excess
            self._cond.notify_all()

    def read(self, size: int = 65536, timeout: float = 0.0) -> bytes:
        """Up to `size` buffered bytes, waiting up to `timeout` s for the first; b"" if none.

        Raises EOFError once the stream is closed and drained.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._buf:
                if self._closed:
                    raise EOFError(f"com1 stream of {self.name} is closed")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return b""
                self._cond.wait(remaining)
            data = bytes(self._buf[:size])
            del self._buf[:size]
            return data

    def expect(
        self,
        patterns: Sequence[str | re.Pattern[str]],
        timeout: float,
        watcher: ConsoleWatcher | None = None,
        *,
        dump_wait: float = DUMP_WAIT,
    ) -> re.Match[str]:
        """Wait for the earliest match of any pattern (str: a regex) in the console text.

        Text up to the end of the match is consumed; `match.string[:match.start()]` is
        what came before it. With a watcher, every byte this call reads also goes to the
        watcher, and a crash it recognises (now, or in an earlier wait) raises ConsoleCrash
        at once, after settle_crash(watcher, dump_wait) has collected the dump that follows
        the crash line.
        Raises Com1Timeout naming what was awaited, the console state and the last lines.
        """
        compiled = [re.compile(p) if isinstance(p, str) else p for p in patterns]
        if not compiled:
            raise ValueError("expect() needs at least one pattern")
        deadline = time.monotonic() + timeout
        start = 0
        while True:
            if watcher is not None and watcher.crash is not None:
                raise self.settle_crash(watcher, dump_wait)
            match = self._search(compiled, start)
            if match is not None:
                self._text = self._text[match.end() :]
                return match
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout(compiled, timeout)
            data = self.read(timeout=remaining)
            start = max(0, len(self._text) - _EXPECT_LOOKBACK)
            if data:
                start -= self._take(data, watcher)

    def settle_crash(self, watcher: ConsoleWatcher, dump_wait: float = DUMP_WAIT) -> ConsoleCrash:
        """The ConsoleCrash to raise, once the dump after the crash line is in its evidence.

        Reads on until the watcher has its lines after the crash, com1 is quiet for
        EVIDENCE_QUIET s, or `dump_wait` s have passed.
        """
        crash = watcher.crash
        if crash is None:
            raise ValueError("the watcher has seen no crash")
        end = time.monotonic() + dump_wait
        while not watcher.evidence_complete:
            wait = min(EVIDENCE_QUIET, end - time.monotonic())
            if wait <= 0:
                break
            try:
                data = self.read(timeout=wait)
            except EOFError:
                break
            if not data:
                break
            self._take(data, watcher)
        return ConsoleCrash(watcher.crash or crash, watcher.evidence, self.name)

    def _take(self, data: bytes, watcher: ConsoleWatcher | None) -> int:
        """Add bytes to the expect text and the watcher; returns chars dropped from the text."""
        if watcher is not None:
            watcher.feed(data)
        text = self._decoder.decode(data)
        self._text += text
        self._tail = (self._tail + text)[-_TAIL_CHARS:]
        dropped = max(0, len(self._text) - _EXPECT_TEXT_LIMIT)
        self._text = self._text[dropped:]
        return dropped

    def _search(self, patterns: list[re.Pattern[str]], start: int) -> re.Match[str] | None:
        best: re.Match[str] | None = None
        for pattern in patterns:
            match = pattern.search(self._text, max(start, 0))
            if match is not None and (best is None or match.start() < best.start()):
                best = match
        return best

    def _timeout(self, patterns: list[re.Pattern[str]], timeout: float) -> Com1Timeout:
        awaited = [p.pattern for p in patterns]
        lines = [line.rstrip("\r") for line in self._tail.split("\n")][-_TAIL_LINES:]
        shown = "\n".join(f"  {line}" for line in lines) if self._tail else "  (nothing)"
        message = (
            f"com1 of {self.name}: none of {awaited} seen within {timeout:g} s "
            f"({self._recorder._state_text()}); last lines seen:\n{shown}"
        )
        return Com1Timeout(message, awaited, timeout, lines)

    def close(self) -> None:
        """Stop receiving; idempotent."""
        self._recorder._unsubscribe(self)
        self._close()

    def _close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __enter__(self) -> Com1Stream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
