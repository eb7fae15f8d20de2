"""Plots of a run's figures, for what people read better as pictures: boot timelines,
migration times, guest network figures, a figure's trend over runs.

Each function writes one small PNG (800x400 px) and returns its path. They draw on
matplotlib's Agg canvas directly: no display, no pyplot state shared between threads
or calls. Given nothing to draw, a function raises ValueError and writes no file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

SIZE = (8, 4)  # inches, at DPI: 800x400 px
DPI = 100
FONT = 8
# one colour per series, told apart in print and by the colour-blind (Okabe-Ito)
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#000000")
WARN = "#D55E00"


def boot_timeline(timelines: dict[str, list[tuple[str, float]]], out: Path) -> Path:
    """One horizontal bar per host: its boot stages (harness.strategy.BootTimeline
    .stages: stage, seconds after power-on) as segments, each boundary labelled with its
    time. A host without stages keeps its row, empty: it reached none."""
    if not any(timelines.values()):
        raise ValueError("boot timeline: no host has a boot stage")
    figure, (axes,) = _figure()
    axes.grid(axis="x", alpha=0.3)
    stages = list(dict.fromkeys(name for stages in timelines.values() for name, _ in stages))
    colour = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(stages)}
    hosts = list(timelines)
    for row, host in enumerate(hosts):
        if not timelines[host]:
            axes.annotate("no stage reached", (0, row), xytext=(4, 0),
                          textcoords="offset points", va="center", fontsize=FONT)
        start = 0.0
        for i, (name, at) in enumerate(timelines[host]):
            axes.barh(row, at - start, left=start, height=0.5, color=colour[name],
                      edgecolor="white", label=name)
            # above the bar's top edge (the y axis is inverted), staggered: close
            # boundaries would print over each other
            axes.annotate(f"{at:.1f}", (at, row - 0.25), xytext=(0, 2 + 9 * (i % 2)),
                          textcoords="offset points", ha="center", va="bottom", fontsize=FONT)
            start = at
    axes.set_yticks(range(len(hosts)), hosts)
    axes.invert_yaxis()  # first host on top
    axes.set_ylim(len(hosts) - 0.5, -0.9)
    axes.set_xlim(0, max(at for stages in timelines.values() for _, at in stages) * 1.05)
    axes.set_xlabel("seconds after power-on")
    axes.set_title("boot timeline: stage reached at (s)")
    _legend(axes, ncol=len(stages), loc="upper center", bbox_to_anchor=(0.5, -0.14))
    return _save(figure, out)


def migration(moves: list[tuple[str, float, float]], out: Path) -> Path:
    """Per move (label, total time s, downtime s): its total time and its downtime, side
    by side, each on its own scale (downtime in ms: it is a thousand times shorter)."""
    if not moves:
        raise ValueError("migration: no move to plot")
    figure, (total, down) = _figure(columns=2)
    labels = [label for label, _, _ in moves]
    _bars(total, labels, [seconds for _, seconds, _ in moves], "s", COLOURS[0])
    total.set_title("migration time")
    _bars(down, labels, [seconds * 1000 for _, _, seconds in moves], "ms", COLOURS[1])
    down.set_title("downtime")
    down.set_yticklabels([])
    return _save(figure, out)


def network(figures: list[tuple[str, str, float, str]], out: Path) -> Path:
    """Guest network figures (test, figure, value, unit), one panel per unit, stacked
    in order of first appearance: loss %, rtt ms, throughput Mbit/s, ..."""
    if not figures:
        raise ValueError("network: no figure to plot")
    units = list(dict.fromkeys(unit for _, _, _, unit in figures))
    figure, panels = _figure(rows=len(units))
    for i, (axes, unit) in enumerate(zip(panels, units, strict=True)):
        rows = [(f"{test}: {name}", value) for test, name, value, u in figures if u == unit]
        _bars(axes, [label for label, _ in rows], [value for _, value in rows], unit,
              COLOURS[i % len(COLOURS)])
        axes.set_title(unit, loc="left", fontsize=FONT + 1)
        axes.set_xlabel("")
    return _save(figure, out)


def trend(name: str, unit: str, points: list[tuple[str, float]], out: Path,
          median: float | None = None, tolerance_limit: float | None = None) -> Path:
    """`name` over runs (run id, value), oldest first, with the baseline's median and
    the tolerance limit as lines. With both, the points past the limit (on its side
    away from the median) are marked."""
    if not points:
        raise ValueError(f"trend of {name}: no run has it")
    figure, (axes,) = _figure()
    axes.grid(axis="y", alpha=0.3)
    runs = [run for run, _ in points]
    values = [value for _, value in points]
    axes.plot(range(len(runs)), values, marker="o", color=COLOURS[0], label=name)
    if median is not None:
        axes.axhline(median, color=COLOURS[2], linestyle="--",
                     label=f"baseline median {median:g} {unit}")
    if tolerance_limit is not None:
        axes.axhline(tolerance_limit, color=WARN, linestyle=":",
                     label=f"tolerance limit {tolerance_limit:g} {unit}")
    if median is not None and tolerance_limit is not None:
        worse = [(i, v) for i, v in enumerate(values)
                 if (v - tolerance_limit) * (tolerance_limit - median) > 0]
        if worse:
            axes.scatter([i for i, _ in worse], [v for _, v in worse], s=80,
                         facecolors="none", edgecolors=WARN, linewidths=2,
                         label="past the limit", zorder=3)
    # at most about 12 run labels: run ids are long
    step = max(1, -(-len(runs) // 12))
    axes.set_xticks(range(0, len(runs), step), runs[::step], rotation=20, ha="right")
    axes.set_ylabel(unit)
    axes.set_title(f"{name} over runs")
    _legend(axes, ncol=1, loc="best")
    return _save(figure, out)


def _figure(rows: int = 1, columns: int = 1) -> tuple[Figure, list[Axes]]:
    """A figure on its own Agg canvas, with rows x columns panels."""
    figure = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    panels = list(figure.subplots(rows, columns, squeeze=False).flat)
    for panel in panels:
        panel.tick_params(labelsize=FONT)
    return figure, panels


def _bars(axes: Axes, labels: Sequence[str], values: Sequence[float], unit: str,
          colour: str) -> None:
    """Horizontal bars, first on top, each with its value written at its end."""
    rows = range(len(labels))
    axes.barh(rows, values, color=colour, height=0.6)
    axes.set_yticks(rows, labels, fontsize=FONT)
    axes.invert_yaxis()
    for row, value in zip(rows, values, strict=True):
        axes.annotate(f"{value:.3g} {unit}", (value, row), xytext=(3, 0),
                      textcoords="offset points", va="center", fontsize=FONT)
    axes.set_xlim(0, max(max(values), 0) * 1.25 or 1)
    axes.set_xlabel(unit)
    axes.grid(axis="x", alpha=0.3)


def _legend(axes: Axes, ncol: int, **where: Any) -> None:
    # one entry per label: each host's segments repeat the stage names
    handles, labels = axes.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    axes.legend(unique.values(), unique.keys(), fontsize=FONT, ncol=ncol, framealpha=0.8,
                **where)


def _save(figure: Figure, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="png", dpi=DPI)
    return out
