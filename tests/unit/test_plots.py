"""Plots: each function writes one 800x400 PNG, or refuses empty input."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

BOOT = {
    "vlab1": [("bootloader", 4.2), ("xen", 9.8), ("dom0 kernel", 14.1), ("login", 61.3),
              ("ssh", 63.0)],
    "vlab2": [("bootloader", 4.5), ("xen", 10.4)],
    "vlab3": [],
}
MOVES = [("vlab1 -> vlab2", 12.4, 0.183), ("vlab2 -> vlab1", 11.9, 0.0)]
NETWORK = [
    ("test_bridged", "guest->dom0 loss", 0.0, "%"),
    ("test_bridged", "guest->dom0 rtt avg", 0.82, "ms"),
    ("test_routed", "guest->dom0 rtt avg", 1.4, "ms"),
    ("test_bridged", "guest->peer throughput", 412.0, "Mbit/s"),
]
TREND = [("20261101-nightly", 0.18), ("20261102-nightly", 0.19), ("20261103-nightly", 0.31)]

PLOTS: dict[str, Callable[[Path], Path]] = {
    "boot_timeline": lambda out: plots.boot_timeline(BOOT, out),
    "migration": lambda out: plots.migration(MOVES, out),
    "network": lambda out: plots.network(NETWORK, out),
    "trend": lambda out: plots.trend("downtime", "s", TREND, out, median=0.19,
                                     tolerance_limit=0.2375),
    "trend without baseline": lambda out: plots.trend("downtime", "s", TREND[:1], out),
}


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize("plot", PLOTS.values(), ids=PLOTS.keys())
def test_writes_one_png(plot: Callable[[Path], Path], tmp_path: Path) -> None:
    out = tmp_path / "plots" / "figure.png"  # the directory is made
    assert plot(out) == out
    data = out.read_bytes()
    assert _png_size(data) == (800, 400)
    assert len(data) > 5000  # drawn, not blank
    assert list(tmp_path.rglob("*")) == [out.parent, out]


EMPTY: dict[str, Callable[[Path], Path]] = {
    "boot_timeline": lambda out: plots.boot_timeline({}, out),
    "boot_timeline, no stage": lambda out: plots.boot_timeline({"vlab1": []}, out),
    "migration": lambda out: plots.migration([], out),
    "network": lambda out: plots.network([], out),
    "trend": lambda out: plots.trend("downtime", "s", [], out, median=0.19),
}


@pytest.mark.parametrize("plot", EMPTY.values(), ids=EMPTY.keys())
def test_nothing_to_draw_is_a_value_error_and_no_file(plot: Callable[[Path], Path],
                                                      tmp_path: Path) -> None:
    out = tmp_path / "figure.png"
    with pytest.raises(ValueError, match="no "):
        plot(out)
    assert not out.exists()


def test_the_limit_shows(tmp_path: Path) -> None:
    """The tolerance line and the marks of points past it are drawn: the picture
    differs from the one without them."""
    without = plots.trend("downtime", "s", TREND, tmp_path / "a.png", median=0.19)
    limited = plots.trend("downtime", "s", TREND, tmp_path / "b.png", median=0.19,
                          tolerance_limit=0.2375)
    assert without.read_bytes() != limited.read_bytes()
