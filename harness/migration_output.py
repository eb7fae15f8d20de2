"""Parsers for what a migration leaves behind: `xl -vvv migrate` (or save/restore)
output, and the timestamped ping log of a downtime probe. Pure functions, tested on
recorded real output (tests/data/migration/)."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

_PING_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from [^:]+: icmp_seq=(\d+)")
_PING_NO_ANSWER = re.compile(r"^\[(\d+\.\d+)\] no answer yet for icmp_seq=(\d+)")


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
    unique = {seq for _, seq in replies}
    return ProbeResult(sent=highest_seq, received=len(unique), longest_gap=gap,
                       gap_started=gap_started,
                       last_reply=replies[-1][0] if replies else None)


@dataclass(frozen=True)
class MigrateOutput:
    """What `xl -vvv migrate` / `save` / `restore` reported. None: not in the output
    (Debian's 4.17 reports no rates or times; SUSE's libxc-sr patches add them)."""

    iterations: int | None
    pages_sent: int | None
    transfer_mb_per_s: float | None
    reported_seconds: float | None
    succeeded: bool


def parse_migrate_output(text: str) -> MigrateOutput:
    return MigrateOutput(None, None, None, None, "Migration successful" in text)
