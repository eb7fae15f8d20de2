"""What a run's reports directory shows a person, written at the end of a run and again
by `xenhil report`: index.html (harness.report), the qualification summary, the plots
and the Allure 3 report.

The plots and the Allure report are extras: one that cannot be made is logged and the
pages say it is missing; index.html and junit.xml are always written.
"""

from __future__ import annotations

import html
import json
import logging
import re
import shutil
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from . import plots
from .allure_report import AllureReportError, generate
from .report import TestResult, counts, write_html
from .results.analysis import Analysis
from .results.compare import LabelKind
from .results.figure_checks import first_attempts
from .results.records import RunRecord
from .results.render import short_text

log = logging.getLogger(__name__)

# "vlab1 boot: ssh" (harness.plugin) and "migrate g -> vlab2: downtime (2)" (migration)
_BOOT_STAGE = re.compile(r"(?P<host>\S+) boot: (?P<stage>.+)")
_MOVE = re.compile(r"(?P<what>.+): (?P<figure>time|downtime)(?P<repeat> \(\d+\))?")
NETWORK_UNITS = ("%", "ms", "Mbit/s", "Gbit/s")
# Trend plots of one run at most: the figures that were flagged first.
TREND_LIMIT = 40
# The plots' files in allure-results.
PLOT_PREFIX = "xenhil-plot-"


def write_pages(reports: Path, title: str, results: list[TestResult], *,
                analysis: Analysis | None,
                history: Path | None, trend_runs: list[RunRecord] | None = None) -> Path:
    """index.html and the rest, of `results` (read_results of the run's allure-results);
    returns index.html's path. `history`: the lab's Allure
    history file, this run appended to it (None: a regenerated report, which must not
    add the run to it a second time). `trend_runs`: earlier runs (with their results)
    for the figures' trends."""
    if analysis is not None:
        _write_plots(reports / "plots", analysis, trend_runs or [])
        write_qualification(reports, title, results, analysis)
    _write_allure(reports, title, analysis, history)
    return write_html(reports, title, results, analysis=analysis)


def _write_plots(out: Path, analysis: Analysis, trend_runs: list[RunRecord]) -> None:
    shutil.rmtree(out, ignore_errors=True)
    timelines: dict[str, list[tuple[str, float]]] = defaultdict(list)
    moves: dict[str, dict[str, float]] = defaultdict(dict)
    network: list[tuple[str, str, float, str]] = []
    for result in first_attempts(analysis.run).values():
        for figure in result.figures:
            if boot := _BOOT_STAGE.fullmatch(figure.name):
                timelines[boot["host"]].append((boot["stage"], figure.value))
            elif move := _MOVE.fullmatch(figure.name):
                label = f"{result.test_id.rpartition('::')[2]}: {move['what']}" \
                        f"{move['repeat'] or ''}"
                moves[label][move["figure"]] = figure.value
            elif figure.unit in NETWORK_UNITS:
                network.append((result.test_id.rpartition("::")[2], figure.name,
                                figure.value, figure.unit))
    if timelines:
        plots.boot_timeline(dict(timelines), out / "boot-timeline.png")
    if moves:
        plots.migration([(label, times.get("time", 0.0), times.get("downtime", 0.0))
                         for label, times in moves.items()], out / "migration.png")
    if network:
        plots.network(network, out / "guest-network.png")
    _write_trends(out / "trends", analysis, trend_runs)


def _write_trends(out: Path, analysis: Analysis, trend_runs: list[RunRecord]) -> None:
    """Each figure over the earlier runs and this one, with its baseline median and
    tolerance where the comparison judged it; flagged figures first."""
    checks = {(check.test_id, check.name): check for check in analysis.comparison.figures}
    runs = sorted([*trend_runs, analysis.run],
                  key=lambda run: run.started.timestamp() if run.started else 0)
    series: dict[tuple[str, str, str], list[tuple[str, float]]] = defaultdict(list)
    for run in runs:
        for result in first_attempts(run).values():
            for figure in result.figures:
                series[(result.test_id, figure.name, figure.unit)].append((run.id, figure.value))
    ordered = sorted((key for key, points in series.items() if len(points) > 1),
                     key=lambda key: not (checks.get(key[:2]) and checks[key[:2]].flagged))
    for number, (test_id, name, unit) in enumerate(ordered[:TREND_LIMIT], start=1):
        check = checks.get((test_id, name))
        limit = None
        if check is not None:
            allowed = check.tolerance.slack(check.median)
            limit = (check.median + allowed if check.tolerance.higher_is_worse
                     else check.median - allowed)
        title = f"{test_id.rpartition('::')[2]}: {name}"
        plots.trend(title, unit, series[(test_id, name, unit)],
                    out / f"{number:02d}-{_slug(title)}.png",
                    median=check.median if check else None, tolerance_limit=limit)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:60]


def _write_allure(reports: Path, title: str, analysis: Analysis | None,
                  history: Path | None) -> None:
    known = []
    variables = {}
    if analysis is not None:
        known = [("^" + re.escape(test_id) + "$", "", label.bug_url or "known issue")
                 for test_id, label in analysis.comparison.labels.items()
                 if label.kind == LabelKind.KNOWN]
        variables = {"build": analysis.run.build_label, "verdict": analysis.run.verdict,
                     "baseline": analysis.comparison.baseline_id or "none",
                     **{f"host {host.name}": f"Xen {host.xen_version}, dom0 "
                        f"{host.dom0_kernel}" for host in analysis.run.hosts}}
    _plots_as_allure_globals(reports)
    with tempfile.TemporaryDirectory() as scratch:
        if history is None:  # regenerated: show the history, do not add to it
            history = Path(scratch) / "history.jsonl"
        try:
            generate(reports, history=history, title=title, known=known,
                     variables=variables)
        except AllureReportError as error:
            log.warning("no Allure report for %s: %s", reports.name, error)


def _plots_as_allure_globals(reports: Path) -> None:
    """The run's plots as the Allure report's global attachments: copied into
    allure-results as attachments, named in a globals file (Allure 3 reads
    `*-globals.json`). An earlier set, of a report made before, is replaced."""
    results = reports / "allure-results"
    for old in results.glob(f"{PLOT_PREFIX}*-attachment.png"):
        old.unlink()
    attachments: list[dict[str, str]] = []
    plots = reports / "plots"
    for path in sorted(plots.rglob("*.png")) if plots.is_dir() else ():
        name = path.relative_to(plots).with_suffix("").as_posix().replace("/", " ")
        source = f"{PLOT_PREFIX}{len(attachments):03d}-attachment.png"
        shutil.copyfile(path, results / source)
        attachments.append({"name": name, "source": source, "type": "image/png"})
    globals_file = results / f"{PLOT_PREFIX}globals.json"
    if attachments:
        globals_file.write_text(json.dumps({"attachments": attachments}, indent=1))
    else:
        globals_file.unlink(missing_ok=True)


def write_qualification(reports: Path, title: str, results: list[TestResult],
                        analysis: Analysis) -> Path:
    """One build across hosts and areas, for a release manager: per area and host the
    tests by status, then every test that did not pass with its label, and the known
    issues with their reasons."""
    esc = html.escape
    run, comparison = analysis.run, analysis.comparison
    first = [result for result in results if result.attempt == 1]
    hosts = sorted({result.host for result in first if result.host}) or [""]
    cells: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for result in first:
        cells[(result.area or "other", result.host)][result.status] += 1
    areas = list(dict.fromkeys(result.area or "other" for result in first))
    matrix = "".join(
        f"<tr><th>{esc(area)}</th>" + "".join(
            f"<td>{esc(', '.join(f'{n} {s}' for s, n in cells[(area, host)].items()))}</td>"
            for host in hosts) + "</tr>" for area in areas)
    labelled = [(test_id, label) for test_id, label in comparison.labels.items()
                if short_text(label)]
    issues = "".join(
        f"<tr><td>{esc(short_text(label))}</td><td>{esc(test_id)}</td>"
        f"<td>{esc(label.detail)}</td><td>"
        + (f'<a href="{esc(label.bug_url)}">{esc(label.bug_url)}</a>' if label.bug_url else "")
        + "</td></tr>" for test_id, label in labelled)
    tally = ", ".join(f"{n} {s}" for s, n in counts(first).items())
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Qualification: {esc(run.build_label)}</title>
<style>body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
</style></head><body>
<h1>Qualification of {esc(run.build_label)}</h1>
<p>{esc(title)}: verdict <b>{esc(run.verdict or comparison.verdict)}</b> against
{esc(f"baseline {comparison.baseline_id}" if comparison.baseline_id else "no baseline")};
{esc(tally)}. Package set {esc(run.build_hash)}, harness {esc(run.revision or "?")}.</p>
<table><tr><th>area</th>{"".join(f"<th>{esc(h or 'no host')}</th>" for h in hosts)}</tr>
{matrix}</table>
<h2>Every test that did not pass, and why</h2>
<table><tr><th>label</th><th>test</th><th>why</th><th>bug</th></tr>{issues}</table>
<p><a href="index.html">the run's page</a></p>
</body></html>
"""
    out = reports / "qualification.html"
    out.write_text(page)
    return out
