"""Ping summaries and throughput figures, on output recorded from real pings."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from harness.guests.guest import PING_OUTPUT_SEPARATOR, Guest
from harness.network import Throughput, parse_ping
from harness.remote import CommandResult

DATA = Path(__file__).parent.parent / "data" / "network"


def test_iputils_ping_summary() -> None:
    stats = parse_ping((DATA / "ping-iputils.txt").read_text())
    assert (stats.transmitted, stats.received) == (5, 5)
    assert stats.loss_percent == 0.0
    assert stats.rtt_avg_ms == pytest.approx(0.095)


def test_busybox_ping_summary() -> None:
    stats = parse_ping((DATA / "ping-busybox.txt").read_text())
    assert (stats.transmitted, stats.received) == (5, 5)
    assert stats.rtt_avg_ms == pytest.approx(0.058)


def test_busybox_ping_with_no_replies() -> None:
    stats = parse_ping((DATA / "ping-busybox-no-replies.txt").read_text())
    assert stats.received == 0 and stats.loss_percent == 100.0
    assert stats.rtt_avg_ms is None
    assert "100.0 % loss" in str(stats)


def test_output_without_a_summary_is_an_error() -> None:
    with pytest.raises(ValueError, match="no ping summary"):
        parse_ping("ping: bad address 'nowhere'\n")


def test_throughput_in_megabits() -> None:
    figure = Throughput("198.51.100.11", 32 * 2**20, 2.0)
    assert figure.mbit_per_s == pytest.approx(134.2, abs=0.1)
    assert "32 MiB in 2.00 s" in str(figure)


class ShellGuest:
    """What Guest.pings needs of a guest: its commands run by a real bash, with /run
    under `root` and a `ping` that notes when it ran and prints the recorded summary
    for its target (no replies from 198.51.100.99)."""

    def __init__(self, root: Path) -> None:
        self.name = "g1"
        self.root = root
        self.host = SimpleNamespace(timeouts={"command": 30.0})

    def run(self, command: str, *, check: bool, timeout: float) -> CommandResult:
        runs = self.root / "ping-runs"
        stand_in = (
            f'ping() {{ echo "$(date +%s.%N) start" >> {runs}; sleep 0.5; '
            f'echo "$(date +%s.%N) end" >> {runs}; '
            f'if [ "${{@: -1}}" = 198.51.100.99 ]; then '
            f'cat {DATA / "ping-busybox-no-replies.txt"}; '
            f'else cat {DATA / "ping-busybox.txt"}; fi; }}\n')
        process = subprocess.run(["bash", "-c", stand_in + command.replace("/run/",
                                                                           f"{self.root}/")],
                                 capture_output=True, text=True, timeout=timeout, check=False)
        return CommandResult(self.name, command, process.returncode, process.stdout,
                             process.stderr, datetime.now(UTC), 0.0)


def test_pings_run_side_by_side_each_summary_its_targets(tmp_path: Path) -> None:
    guest = ShellGuest(tmp_path)
    stats = Guest.pings(cast(Guest, guest), ["198.51.100.1", "198.51.100.99"], 5, 0.2)
    assert [(s.transmitted, s.received) for s in stats] == [(5, 5), (3, 0)]
    events = sorted(line.split() for line in (tmp_path / "ping-runs").read_text().splitlines())
    assert [what for _, what in events] == ["start", "start", "end", "end"]  # overlapped
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ping-runs"]  # outputs gone


def test_a_lost_ping_output_is_an_error(tmp_path: Path) -> None:
    guest = ShellGuest(tmp_path)
    real_run = guest.run
    guest.run = lambda command, **kwargs: real_run(  # type: ignore[method-assign]
        command.replace(f"echo {PING_OUTPUT_SEPARATOR}; cat /run/xenhil-ping-1", "true"),
        **kwargs)
    with pytest.raises(ValueError, match="g1: 1 ping outputs for 2 targets"):
        Guest.pings(cast(Guest, guest), ["198.51.100.1", "198.51.100.2"], 5, 0.2)
