"""Figures against their history: each figure of a run's test is compared with the
median of the same test's same figure (same unit) over earlier runs, and flagged when
it is worse by more than its tolerance.

Which way is worse, and by how much is too much, is one table keyed by unit; a
figure whose unit the table does not know is not judged. Overrides are keyed by unit
or by an fnmatch pattern over figure names; a name pattern wins over a unit.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from .records import Figure, ResultRecord, RunRecord

# Results whose figures mean something: a broken test measured the lab, if anything.
MEASURED = ("passed", "failed")


@dataclass(frozen=True)
class Tolerance:
    """How much worse than the median a figure may be: the larger of `relative` (a
    fraction of the median) and `absolute` (in the figure's unit)."""

    higher_is_worse: bool
    relative: float = 0.0
    absolute: float = 0.0

    def slack(self, median: float) -> float:
        return max(self.relative * abs(median), self.absolute)

    def exceeded(self, value: float, median: float) -> bool:
        worse_by = value - median if self.higher_is_worse else median - value
        return worse_by > self.slack(median)

    def describe(self, unit: str) -> str:
        sign = "+" if self.higher_is_worse else "-"
        parts = [f"{sign}{self.relative * 100:g} %"] if self.relative else []
        if self.absolute:
            parts.append(f"{sign}{self.absolute:g} {unit}")
        return " or ".join(parts)


_LONGER = Tolerance(higher_is_worse=True, relative=0.25)  # times, downtime, rtt
_SLOWER = Tolerance(higher_is_worse=False, relative=0.25)  # throughput
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "s": _LONGER,
    "ms": _LONGER,
    # Losses are percentages near 0: one percentage point, not a fraction of ~0.
    "%": Tolerance(higher_is_worse=True, absolute=1.0),
    "Mbit/s": _SLOWER,
    "Gbit/s": _SLOWER,
}


def tolerance_for(name: str, unit: str,
                  overrides: Mapping[str, Tolerance] | None = None) -> Tolerance | None:
    overrides = overrides or {}
    for pattern, tolerance in overrides.items():
        if fnmatchcase(name, pattern):
            return tolerance
    return overrides.get(unit, DEFAULT_TOLERANCES.get(unit))


@dataclass(frozen=True)
class FigureCheck:
    test_id: str
    name: str
    unit: str
    value: float
    median: float
    runs: int  # how many earlier runs the median comes from
    tolerance: Tolerance
    flagged: bool

    @property
    def change(self) -> str:
        """The difference to the median: relative, or absolute for % figures and when
        the median is 0."""
        if self.unit == "%" or not self.median:
            return f"{self.value - self.median:+g} {self.unit}"
        return f"{(self.value - self.median) / abs(self.median) * 100:+.0f} %"


def first_attempts(run: RunRecord) -> dict[str, ResultRecord]:
    """Each test's first try, in run order: a retest (attempt 2) is not the result."""
    first: dict[str, ResultRecord] = {}
    for result in sorted(run.results, key=lambda result: result.attempt):
        first.setdefault(result.test_id, result)
    return {result.test_id: first[result.test_id] for result in run.results
            if first[result.test_id] is result}


def check_figures(results: Iterable[ResultRecord], history: Iterable[RunRecord],
                  tolerances: Mapping[str, Tolerance] | None = None) -> list[FigureCheck]:
    """A check for each figure of each passed or failed result that has a tolerance
    and at least one earlier value."""
    earlier: dict[tuple[str, str, str], list[float]] = {}
    for run in history:
        for result in first_attempts(run).values():
            if result.status in MEASURED:
                for figure in _unique(result):
                    earlier.setdefault((result.test_id, figure.name, figure.unit),
                                       []).append(figure.value)
    checks = []
    for result in results:
        if result.status not in MEASURED:
            continue
        for figure in _unique(result):
            values = earlier.get((result.test_id, figure.name, figure.unit))
            tolerance = tolerance_for(figure.name, figure.unit, tolerances)
            if not values or tolerance is None:
                continue
            median = statistics.median(values)
            checks.append(FigureCheck(
                test_id=result.test_id, name=figure.name, unit=figure.unit,
                value=figure.value, median=median, runs=len(values), tolerance=tolerance,
                flagged=tolerance.exceeded(figure.value, median)))
    return checks


def _unique(result: ResultRecord) -> list[Figure]:
    """A figure recorded twice under one name counts once: the last value, as the
    test's report shows it."""
    return list({figure.name: figure for figure in result.figures}.values())
