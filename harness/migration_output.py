"""Parsers for what a migration leaves behind: `xl -vvv migrate` (or save/restore)
output, and the timestamped ping log of a downtime probe. Pure functions, tested on
recorded real output (tests/data/migration/)."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

_PING_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from [^:]+: icmp_seq=(\d+)")
_PING_NO_ANSWER = re.compile(r"^\[(\d+\.\d+)\] no answer yet for icmp_seq=(\d+)")
_PING_SUMMARY = re.compile(r"^(\d+) packets transmitted, (\d+) received")


@dataclass(frozen=True)
class ProbeResult:
    """What a ping probe saw: the longest silence between two replies (the guest's
    unreachability window, at the probe's resolution), and the count of echoes."""

    sent: int
    received: int
    longest_gap: float  # seconds between two consecutive replies
    gap_started: float | None  # epoch seconds of the reply before that gap
    last_reply: float | None  # epoch seconds

    @property
    def lost(self) -> int:
        return self.sent - self.received


def parse_ping_probe(text: str) -> ProbeResult:
    """`ping -D -O -n -i INTERVAL ADDRESS` output, possibly cut off (killed)."""
    replies: list[tuple[float, int]] = []
    highest_seq = 0
    for line in text.splitlines():
        reply = _PING_REPLY.match(line)
        if reply:
            replies.append((float(reply.group(1)), int(reply.group(2))))
            highest_seq = max(highest_seq, int(reply.group(2)))
            continue
        silent = _PING_NO_ANSWER.match(line)
        if silent:
            highest_seq = max(highest_seq, int(silent.group(2)))
    gap, gap_started = 0.0, None
    for (before, _), (after, _) in itertools.pairwise(replies):
        if after - before > gap:
            gap, gap_started = after - before, before
    sent, received = highest_seq, len({seq for _, seq in replies})
    summary = next((m for m in map(_PING_SUMMARY.match, text.splitlines()) if m), None)
    if summary:  # ping's own count, when it was stopped with SIGINT
        sent, received = int(summary.group(1)), int(summary.group(2))
    return ProbeResult(sent=sent, received=received, longest_gap=gap,
                       gap_started=gap_started,
                       last_reply=replies[-1][0] if replies else None)


@dataclass(frozen=True)
class MigrateOutput:
    """What `xl -vvv migrate` / `save` / `restore` reported. None: not in the output
    (Debian's 4.17 reports no rates or times; SUSE's libxc-sr patches add them)."""

    succeeded: bool  # xl migrate's "Migration successful."
    first_error: str | None  # the first error libxc (xc) or libxl logged
    iterations: int | None = None
    pages_sent: int | None = None
    transfer_mb_per_s: float | None = None
    reported_seconds: float | None = None


_ERROR = re.compile(r"^(?:xc|libxl): error: .*$", re.MULTILINE)


def parse_migrate_output(text: str) -> MigrateOutput:
    error = _ERROR.search(text)
    return MigrateOutput(succeeded="Migration successful" in text,
                         first_error=error.group(0) if error else None)
