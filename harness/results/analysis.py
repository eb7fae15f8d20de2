"""A run read back from the results database and compared with its baseline: what
`xenhil run` does at its end, and `xenhil compare` and `xenhil report` do later."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from ..build import XenBuild
from ..errors import ConfigError
from ..paths import data_root
from .compare import Comparison, compare
from .known import KnownIssue, load_known_issues
from .records import RunRecord

if TYPE_CHECKING:
    from .db import ResultsDB

# How many earlier baseline runs the median of a figure is taken over.
FIGURE_HISTORY_RUNS = 5


def build_fields(build: XenBuild) -> tuple[str, tuple[str, ...], str]:
    """A build as a run records it: label, "name version arch" of each package, and a
    hash of the package set that tells apart two builds with the same label."""
    packages = tuple(sorted(f"{p.name} {p.version} {p.arch}" for p in build.packages))
    digest = hashlib.sha256("\n".join(packages).encode()).hexdigest()[:16]
    return build.label, packages, digest


def default_known_issues() -> Path:
    return data_root() / "known-issues.yaml"


def known_issues(path: Path | None) -> list[KnownIssue]:
    """The reviewed known issues: `path`, else the repository's known-issues.yaml."""
    path = path or default_known_issues()
    if not path.is_file():
        if path == default_known_issues():
            return []
        raise ConfigError(f"{path}: known-issues file not found")
    return load_known_issues(path)


# How many earlier runs a figure's trend plot shows.
TREND_RUNS = 10


def earlier_runs(db: ResultsDB, run: RunRecord) -> list[RunRecord]:
    """The last runs of the same profile on the same lab before `run`, with their
    results: the history of its figures' trends."""
    found = []
    for listed in db.runs(limit=TREND_RUNS + 1, profile=run.profile, lab=run.lab):
        if listed.id != run.id and (record := db.get_run(listed.id)) is not None:
            found.append(record)
    return found[:TREND_RUNS]


@dataclass(frozen=True)
class Analysis:
    run: RunRecord
    baseline: RunRecord | None
    comparison: Comparison


def analyse(db: ResultsDB, run_id: str, *, baseline_id: str | None = None,
            known: list[KnownIssue] | None = None, today: date | None = None) -> Analysis:
    """The run `run_id` compared with `baseline_id`, or with its own baseline: the last
    passed nightly or qualification run of the same profile on the same lab."""
    run = db.get_run(run_id)
    if run is None:
        raise ConfigError(f"run {run_id} is not in the results database {db.describe()}; "
                          "`xenhil runs` lists the runs it has")
    if baseline_id is not None:
        baseline = db.get_run(baseline_id)
        if baseline is None:
            raise ConfigError(f"baseline run {baseline_id} is not in the results database "
                              f"{db.describe()}; `xenhil runs` lists the runs it has")
    else:
        baseline = db.baseline_for(run)
    comparison = compare(run, baseline, known=known or [],
                         ever_passed=db.ever_passed(run.lab, run.id),
                         figure_history=db.baseline_history(run, FIGURE_HISTORY_RUNS),
                         today=today or date.today())
    return Analysis(run, baseline, comparison)
