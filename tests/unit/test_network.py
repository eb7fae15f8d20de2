"""Ping summaries and throughput figures, on output recorded from real pings."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.network import Throughput, parse_ping

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
