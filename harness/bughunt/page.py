"""What a bisection leaves in its reports directory: index.html, every step with its
runs and links to their reports and com1 logs, and summary.json, the same for scripts.
Both are written again after every run, so a bisection that is stopped keeps them."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

from ..report import STYLE
from .bisect import EXIT_CODES, MEANINGS, Bisection, Verdict
from .series import SeriesBuild
from .steps import StepResult


def _build(build: SeriesBuild | None) -> dict[str, str] | None:
    if build is None:
        return None
    return {"name": build.name, "path": str(build.path), "version": build.version}


def _result(result: StepResult) -> dict[str, Any]:
    return {"status": result.status, "run_id": result.run_id,
            "reports": str(result.reports) if result.reports else None,
            "message": result.message, "duration_s": round(result.duration_s, 1),
            "hosts": list(result.hosts), "evidence": list(result.evidence)}


def summary(outcome: Bisection) -> dict[str, Any]:
    last_failure = outcome.last_failure
    return {
        "test": outcome.test_id, "host": outcome.host,
        "verdict": outcome.verdict.value if outcome.verdict else "running",
        "exit_code": outcome.exit_code if outcome.verdict else None,
        "reason": outcome.reason,
        "first_bad": _build(outcome.first_bad), "last_good": _build(outcome.last_good),
        "suspects": [_build(build) for build in outcome.suspects],
        "skipped": [_build(build) for build in outcome.skipped],
        "confirm": {"start": outcome.confirm.start, "final": outcome.confirm.final},
        "runs_per_step": outcome.runs_per_step,
        "series": [_build(build) for build in outcome.series],
        "last_failure": _result(last_failure) if last_failure else None,
        "steps": [{"number": step.number, "phase": step.phase.value,
                   "build": _build(step.build),
                   "verdict": step.verdict.value if step.verdict else "running",
                   "runs": [{"run": run.run, "attempt": run.attempt, **_result(run.result)}
                            for run in step.runs]}
                  for step in outcome.steps],
    }


def _link(target: Path, page_dir: Path, text: str) -> str:
    if not target.exists():
        return ""
    return f'<a href="{html.escape(os.path.relpath(target, page_dir))}">{html.escape(text)}</a>'


def _run_links(result: StepResult, page_dir: Path) -> str:
    if result.reports is None:
        return ""
    links = [_link(result.reports / "index.html", page_dir, "report"),
             *(_link(result.reports / "com1" / f"{host}.log", page_dir, f"com1 {host}")
               for host in result.hosts)]
    return " ".join(link for link in links if link)


def _run_cell(result: StepResult, label: str, page_dir: Path) -> str:
    esc = html.escape
    first_line = result.message.strip().splitlines()[0] if result.message.strip() else ""
    return (f'<div class="{esc(result.status)}"><b>{esc(result.status)}</b> {esc(label)} '
            f"{esc(result.run_id)} ({result.duration_s:.0f} s) "
            f"{_run_links(result, page_dir)}"
            + (f"<br><small>{esc(first_line[:300])}</small>" if first_line else "")
            + "</div>")


def _verdict_line(outcome: Bisection) -> str:
    esc = html.escape
    if outcome.verdict is None:
        return "<b>running</b>"
    code = outcome.exit_code
    meaning = MEANINGS[outcome.verdict]
    return (f'<b class="verdict-{esc(outcome.verdict.value.replace(" ", "-"))}">'
            f"{esc(outcome.verdict.value)}</b> (exit {code}): {esc(outcome.reason or meaning)}")


def _evidence(outcome: Bisection, page_dir: Path) -> str:
    esc = html.escape
    failure = outcome.last_failure
    if failure is None:
        return "<p>No run failed.</p>"
    files = [_link(failure.reports / path, page_dir, Path(path).name)
             for path in failure.evidence] if failure.reports else []
    return (f"<p>Run {esc(failure.run_id)} {_run_links(failure, page_dir)}</p>"
            f"<pre>{esc(failure.message[:4000])}</pre>"
            f"<p>Its evidence: {' '.join(link for link in files if link) or 'none kept'}</p>")


def write_page(outcome: Bisection, out: Path) -> Path:
    """index.html and summary.json in `out`; returns index.html's path."""
    esc = html.escape
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary(outcome), indent=2) + "\n")
    roles = {outcome.series[0].path: "good end", outcome.series[-1].path: "bad end"}
    roles.update({build.path: "skipped (untestable)" for build in outcome.skipped})
    if outcome.last_good is not None:
        roles[outcome.last_good.path] = "last good"
    if outcome.first_bad is not None:
        roles[outcome.first_bad.path] = ("first bad" if outcome.verdict is Verdict.FOUND
                                         else "first known bad")
    series = "".join(f"<tr><td>{esc(build.name)}</td><td>{esc(build.version)}</td>"
                     f"<td>{esc(roles.get(build.path, ''))}</td></tr>"
                     for build in outcome.series)
    steps = "".join(
        f'<tr class="{esc(step.verdict.value if step.verdict else "running")}">'
        f"<td>{step.number}</td><td>{esc(step.phase.value)}</td>"
        f"<td>{esc(step.build.name)}</td>"
        f"<td>{esc(step.verdict.value if step.verdict else 'running')}</td><td>"
        + "".join(_run_cell(run.result, f"run {run.run} try {run.attempt}", out)
                  for run in step.runs)
        + "</td></tr>" for step in outcome.steps)
    facts = [("verdict", _verdict_line(outcome)), ("test", esc(outcome.test_id)),
             ("host", esc(outcome.host)),
             ("first bad build", esc(outcome.first_bad.name if outcome.first_bad else "-")),
             ("last good build", esc(outcome.last_good.name if outcome.last_good else "-")),
             ("confirmations", f"{outcome.confirm.start} at the start, "
                               f"{outcome.confirm.final} at the end, interleaved"),
             ("runs per step", str(outcome.runs_per_step))]
    codes = "".join(f"<li>{code} {esc(verdict.value)}: {esc(MEANINGS[verdict])}</li>"
                    for verdict, code in EXIT_CODES.items())
    title = f"xen-hil bisection of {outcome.test_id} on {outcome.host}"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>{STYLE}
tr.good td:first-child {{ background: #bfe5bf; }} tr.bad td:first-child {{ background: #f4b6b6; }}
tr.untestable td:first-child {{ background: #f6d58e; }}
div.failed b {{ color: #cc0000; }} div.broken b, div.skipped b {{ color: #b45f06; }}
div.passed b {{ color: #38761d; }}
.verdict-found {{ color: #38761d; }}
</style></head><body>
<h1>{esc(title)}</h1>
<dl>{"".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts)}</dl>
<h2>Builds, by version</h2>
<table><tr><th>build</th><th>hypervisor package version</th><th></th></tr>{series}</table>
<h2>Steps</h2>
<p>A step is bad if any of its runs failed; a broken run is tried again, and a build whose
runs only broke is skipped. Also: <a href="summary.json">summary.json</a>.</p>
<table><tr><th>step</th><th>phase</th><th>build</th><th>verdict</th><th>runs</th></tr>
{steps}</table>
<h2>Evidence of the last failure</h2>
{_evidence(outcome, out)}
<h2>Exit codes</h2><ul>{codes}<li>128+N: stopped by signal N</li></ul>
</body></html>
"""
    index = out / "index.html"
    index.write_text(page)
    return index
