"""Recognise crashes and hang signs in console text (Xen, dom0 Linux) as it arrives.

A `ConsoleWatcher` is fed the com1 stream piece by piece. It classifies every complete
line against the rules below, keeps the lines before the first crash and collects the
dump that follows it, so a wait stops at once, with the evidence, instead of at its
timeout.

The rules follow the exact message formats of the sources:
- Xen 4.17 `xen/drivers/char/console.c` panic(): a line of 40 '*', then
  "Panic on CPU %d:", the reason ("FATAL TRAP: vec 2, NMI[0000]...", "FATAL PAGE FAULT",
  "GENERAL PROTECTION FAULT", "Xen BUG at f.c:1", "Assertion '...' failed at f.c:1", ...);
  `xen/arch/x86/traps.c` "Xen call trace:", "Xen WARN at"; `xen/arch/x86/nmi.c`
  "Watchdog timer detects that CPU%d is stuck!"; `xen/common/shutdown.c`
  "Hardware Dom%u crashed: "; `xen/common/domain.c` "Domain %d (vcpu#%d) crashed on cpu#%d:".
- Linux `kernel/panic.c` "Kernel panic - not syncing: ...", x86 die headers
  "Oops: 0000 [#1] ..." (6.12+: "Oops: Oops: 0000 [#1]"), "general protection fault,
  ...: 0000 [#1]", "BUG: kernel NULL pointer dereference", "BUG: unable to handle ...",
  "kernel BUG at f.c:1!", `kernel/watchdog.c` "watchdog: BUG: soft lockup - CPU#0 stuck",
  "Watchdog detected hard LOCKUP on cpu 1", hung tasks and RCU stalls, "WARNING: CPU: 0 PID: 1 at".

Rules match the message after a line's prefixes are removed: "(XEN) ", printk and Xen
console timestamps ("[    9.36]", "[2025-03-27 01:51:00.123]"), printk caller ids
("[ T1]") and this harness's own com1 log prefix. A guest's "(d1) " prefix is kept on
purpose: a guest's panic is not the host's. Rules are anchored at the message start so
ordinary output that mentions a crash (a user-space "traps: ... general protection fault
ip:..." line, a grep result) does not count.
"""

from __future__ import annotations

import codecs
import enum
import re
from collections import deque
from dataclasses import dataclass

from harness.errors import ProductFailure


class Severity(enum.IntEnum):
    """How bad a console event is; a watcher stops waits at or above its `stop_at`."""

    WARNING = 1  # worth reporting, the host goes on (a guest crashed, a Linux WARN, a stall)
    ERROR = 2  # the host's state is compromised (oops, Xen call trace, soft lockup)
    FATAL = 3  # the host is going down (Xen panic, dom0 panic, dom0 crashed)


@dataclass(frozen=True)
class ConsoleEvent:
    """One recognised console line: `kind` names the rule, `line` is the line as received."""

    kind: str
    line: str
    severity: Severity

    def __str__(self) -> str:
        return f"{self.kind} ({self.severity.name}): {self.line.strip()}"


class ConsoleCrash(ProductFailure):
    """The console showed a crash; carries the event and the evidence text around it.
    A product failure: Xen or dom0 crashed, the lab did not."""

    def __init__(self, event: ConsoleEvent, evidence: str, source: str = "") -> None:
        where = f"{source}: " if source else ""
        super().__init__(f"{where}console shows {event}\n--- evidence ---\n{evidence}")
        self.event = event
        self.evidence = evidence
        self.source = source


@dataclass(frozen=True)
class _Rule:
    kind: str
    severity: Severity
    pattern: re.Pattern[str]


def _rule(kind: str, severity: Severity, regex: str) -> _Rule:
    return _Rule(kind, severity, re.compile(regex))


# First matching rule wins, so specific rules come before general ones.
_RULES: tuple[_Rule, ...] = (
    # Xen
    _rule("xen_panic", Severity.FATAL, r"^Panic on CPU \d+:"),
    _rule(
        "xen_fatal_trap",
        Severity.FATAL,
        r"^(FATAL TRAP|FATAL PAGE FAULT|DOUBLE FAULT|CONTROL-FLOW PROTECTION FAULT)",
    ),
    _rule("general_protection_fault", Severity.FATAL, r"^GENERAL PROTECTION FAULT"),
    _rule("xen_bug", Severity.FATAL, r"^Xen BUG at \S+:\d+"),
    _rule("xen_assert", Severity.FATAL, r"^Assertion '.*' failed at \S+:\d+"),
    _rule("xen_watchdog", Severity.FATAL, r"^Watchdog timer detects that CPU\d+ is stuck"),
    _rule("dom0_crashed", Severity.FATAL, r"^Hardware Dom\d+ crashed"),
    _rule("xen_warn", Severity.ERROR, r"^Xen WARN at \S+:\d+"),
    _rule("xen_call_trace", Severity.ERROR, r"^Xen call trace:"),
    _rule("domain_crashed", Severity.WARNING, r"^Domain \d+ \(vcpu#\d+\) crashed on cpu#\d+"),
    # Linux (dom0 on hvc0)
    _rule("linux_panic", Severity.FATAL, r"^Kernel panic - not syncing"),
    _rule("linux_soft_lockup", Severity.ERROR, r"^(watchdog: )?BUG: soft lockup - CPU#\d+ stuck"),
    _rule(
        "linux_hard_lockup",
        Severity.ERROR,
        r"^(NMI watchdog: )?Watchdog detected hard LOCKUP on cpu \d+",
    ),
    _rule(
        "general_protection_fault",
        Severity.ERROR,
        r"^(Oops: )?general protection fault\b.*: [0-9a-f]{4} \[#\d+\]",
    ),
    _rule("linux_bug", Severity.ERROR, r"^(BUG: |kernel BUG at \S+:\d+!)"),
    _rule("linux_oops", Severity.ERROR, r"^(Oops: |[a-z][a-z ]*: [0-9a-f]{4} \[#\d+\])"),
    _rule(
        "linux_hung_task", Severity.WARNING, r"^INFO: task \S+ blocked for more than \d+ seconds"
    ),
    _rule(
        "linux_rcu_stall",
        Severity.WARNING,
        r"^(rcu: )?INFO: rcu_\w+ (self-)?detected stalls? on CPU",
    ),
    _rule("linux_warning", Severity.WARNING, r"^WARNING: CPU: \d+ PID: \d+ at "),
)

_PREFIX = re.compile(
    r"^(?:"
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z [|#] "  # harness com1 log line
    r"|\(XEN\) ?"
    r"|\[\s*\d+\.\d+\] ?"  # printk time, Xen console_timestamps=boot
    r"|\[\s*[CT]\d+\] ?"  # printk caller id
    r"|\[\d{4}-\d\d-\d\d[ T][\d:.]+\] ?"  # Xen console_timestamps=date/datems
    r")+"
)

# A console line longer than this without a newline is processed in pieces (bounded memory).
_MAX_LINE = 16 * 1024


def classify(line: str) -> ConsoleEvent | None:
    """The event a single console line represents, or None for an ordinary line."""
    message = _PREFIX.sub("", line.rstrip("\r\n"), count=1)
    for rule in _RULES:
        if rule.pattern.search(message):
            return ConsoleEvent(rule.kind, line.rstrip("\r\n"), rule.severity)
    return None


class ConsoleWatcher:
    """Watches console text fed incrementally; remembers the first crash and its evidence.

    `crash` is the first event at or above `stop_at`; while its evidence is still being
    collected a more severe event replaces it (a Xen call trace is followed by its
    "Panic on CPU"). The evidence is up to `lines_before` lines before that first event,
    the event line and up to `lines_after` lines after it. One watcher watches one boot:
    make a new one after the host is power cycled. Not thread-safe: feed from one thread.
    """

    def __init__(
        self,
        stop_at: Severity = Severity.ERROR,
        lines_before: int = 40,
        lines_after: int = 100,
    ) -> None:
        self.stop_at = stop_at
        self._lines_after = lines_after
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._before: deque[str] = deque(maxlen=lines_before)
        self._events: list[ConsoleEvent] = []
        self._crash: ConsoleEvent | None = None
        self._evidence: list[str] = []
        self._after = 0

    def feed(self, data: str | bytes) -> list[ConsoleEvent]:
        """Consume more console output; returns the events of the lines it completed."""
        text = self._decoder.decode(data) if isinstance(data, bytes) else data
        *lines, self._partial = (self._partial + text).split("\n")
        if len(self._partial) > _MAX_LINE:
            lines.append(self._partial)
            self._partial = ""
        new: list[ConsoleEvent] = []
        for raw in lines:
            line = raw.rstrip("\r")
            event = classify(line)
            if event is not None:
                self._events.append(event)
                new.append(event)
            self._track(line, event)
        return new

    def _track(self, line: str, event: ConsoleEvent | None) -> None:
        if self._crash is None:
            if event is not None and event.severity >= self.stop_at:
                self._crash = event
                self._evidence = [*self._before, line]
            else:
                self._before.append(line)
            return
        if self.evidence_complete:
            return
        self._evidence.append(line)
        self._after += 1
        if event is not None and event.severity > self._crash.severity:
            self._crash = event

    @property
    def events(self) -> list[ConsoleEvent]:
        """Every recognised event so far, of any severity, in order."""
        return list(self._events)

    @property
    def crash(self) -> ConsoleEvent | None:
        """The crash that stops waits, or None while the console looks healthy."""
        return self._crash

    @property
    def evidence(self) -> str:
        """The console lines around the crash ("" before any crash)."""
        return "\n".join(self._evidence)

    @property
    def evidence_complete(self) -> bool:
        """True once `lines_after` lines after the crash line have been collected."""
        return self._crash is not None and self._after >= self._lines_after

    def check(self, source: str = "") -> None:
        """Raise ConsoleCrash if a crash has been seen."""
        if self._crash is not None:
            raise ConsoleCrash(self._crash, self.evidence, source)
