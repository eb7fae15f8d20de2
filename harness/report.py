"""The run's HTML report and terminal summary, made from allure-results.

allure-results is the source of truth (each test's status, steps, attachments). The
HTML page is a single self-contained file a person opens the next morning: a header with
the build, each host's Xen, dom0, firmware and microcode, the verdict and the baseline;
then the tests in run order, grouped by area, each with its label against the baseline
(harness.results.compare), its bug and links to its com1 slice, transcripts and boot
timeline; plus links to the whole com1 log of every host.
"""

from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .results.analysis import Analysis
    from .results.records import RunRecord

STATUS_ORDER = ("failed", "broken", "passed", "skipped", "unknown")


@dataclass(frozen=True)
class TestResult:
    name: str
    module: str  # fullName without the test function: pytest's junit classname
    full_name: str
    status: str
    duration_s: float
    host: str
    message: str
    trace: str
    attachments: tuple[tuple[str, str], ...]  # (name, file in allure-results)
    test_id: str = ""  # pytest's node id: the id the results database keys it by
    area: str = ""
    start_ms: int = 0
    attempt: int = 1
    bugs: tuple[tuple[str, str], ...] = ()  # (name, url)


def test_id_of(data: dict[str, Any]) -> str:
    """A test's id across runs: pytest's node id (path relative to the rootdir, test
    name with parameters), as allure-pytest's titlePath and name give it."""
    title_path = data.get("titlePath") or []
    if title_path:
        path = "/".join(title_path)
    else:
        path = data.get("fullName", "?").split("#")[0].replace(".", "/") + ".py"
    return f"{path}::{data.get('name', '?')}"


def read_results(allure_dir: Path) -> list[TestResult]:
    results = []
    for path in sorted(allure_dir.glob("*-result.json")):
        data = json.loads(path.read_text())
        labels = {label["name"]: label["value"] for label in data.get("labels", [])}
        details = data.get("statusDetails") or {}
        attachments = [(a["name"], a["source"]) for a in data.get("attachments", [])]
        for step in data.get("steps", []):
            attachments += [(a["name"], a["source"]) for a in step.get("attachments", [])]
        # fullName has the module but not the parameters; name has the parameters.
        module = data.get("fullName", "?").split("#")[0]
        attempt = labels.get("attempt", "1")
        results.append(TestResult(
            name=data.get("name", "?"),
            module=module,
            full_name=module + "::" + data.get("name", "?"),
            status=data.get("status") or "unknown",
            duration_s=(data.get("stop", 0) - data.get("start", 0)) / 1000,
            host=labels.get("lab_host", ""),
            message=(details.get("message") or "").strip(),
            trace=(details.get("trace") or "").strip(),
            attachments=tuple(attachments),
            test_id=test_id_of(data),
            area=labels.get("area", ""),
            start_ms=int(data.get("start", 0)),
            attempt=int(attempt) if attempt.isdigit() else 1,
            bugs=tuple((link.get("name") or link["url"], link["url"])
                       for link in data.get("links", [])
                       if link.get("type") == "issue" and link.get("url")),
        ))
    results.sort(key=lambda r: (r.start_ms, r.full_name))  # run order
    return results


def counts(results: list[TestResult]) -> Counter[str]:
    """Tests by status, failed first."""
    tally = Counter(result.status for result in results)
    return Counter({status: tally[status] for status in
                    sorted(tally, key=lambda s: STATUS_ORDER.index(s)
                           if s in STATUS_ORDER else 9)})


STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; width: 100%; margin-bottom: 1em; }
td, th { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }
tr.failed td:first-child { background: #f4b6b6; }
tr.broken td:first-child { background: #f6d58e; }
tr.passed td:first-child { background: #bfe5bf; }
tr.skipped td:first-child { background: #ddd; }
td.label-regression { background: #e06666; color: white; font-weight: bold; }
td.label-flaky { background: #f9cb9c; }
td.label-known { background: #cfe2f3; }
td.label-like-baseline, td.label-never-passed, td.label-not-run { background: #eee; }
td.label-broken { background: #f6d58e; }
.verdict-passed { color: #38761d; } .verdict-regressed { color: #cc0000; }
.verdict-broken, .verdict-interrupted { color: #b45f06; }
pre { white-space: pre-wrap; font-size: 85%; margin: 4px 0 0 0; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 1em; }
dt { font-weight: bold; } dd { margin: 0; }
img { max-width: 100%; }
"""


def _label_cell(analysis: Analysis | None, result: TestResult) -> str:
    from .results.render import css_class, short_text

    esc = html.escape
    label = analysis.comparison.labels.get(result.test_id) if analysis else None
    if label is None or result.attempt > 1 or not short_text(label):
        return "<td></td>"
    bug = (f' <a href="{esc(label.bug_url)}">{esc(label.bug_url)}</a>' if label.bug_url
           else "")
    detail = label.detail.removeprefix(f"{label.bug_url}: ")  # the link says it already
    return (f'<td class="{esc(css_class(label.kind))}">{esc(short_text(label))}{bug}'
            f"<br><small>{esc(detail)}</small></td>")


def _row(result: TestResult, analysis: Analysis | None) -> str:
    esc = html.escape
    links = " ".join(f'<a href="allure-results/{esc(source)}">{esc(name)}</a>'
                     for name, source in result.attachments)
    bugs = " ".join(f'<a href="{esc(url)}">{esc(name)}</a>' for name, url in result.bugs)
    message = f"<pre>{esc(result.message[:4000])}</pre>" if result.message else ""
    retest = " (retest)" if result.attempt > 1 else ""
    return (f'<tr class="{esc(result.status)}"><td>{esc(result.status)}{retest}</td>'
            f"{_label_cell(analysis, result)}<td>{esc(result.host)}</td>"
            f"<td>{esc(result.test_id or result.full_name)}{message}</td>"
            f"<td>{result.duration_s:.1f} s</td><td>{links}</td><td>{bugs}</td></tr>")


def _by_area(results: list[TestResult]) -> dict[str, list[TestResult]]:
    """Areas in the order the run reached them, each with its tests in run order."""
    areas: dict[str, list[TestResult]] = {}
    for result in results:
        areas.setdefault(result.area or "other", []).append(result)
    return areas


def _package_changes(run: RunRecord, baseline: RunRecord) -> str:
    """The packages whose name, version or architecture differ from the baseline's build:
    what to suspect first."""
    now, before = set(run.build_packages), set(baseline.build_packages)
    changes = [f"+ {package}" for package in sorted(now - before)]
    changes += [f"- {package}" for package in sorted(before - now)]
    return "<br>".join(html.escape(change) for change in changes) or "none"


def _header(analysis: Analysis | None) -> str:
    """Build, hosts, verdict and baseline: what a release manager signs."""
    if analysis is None:
        return "<p>Not in the results database: no build, host facts or baseline.</p>"
    esc = html.escape
    run, baseline, comparison = analysis.run, analysis.baseline, analysis.comparison
    verdict = run.verdict or comparison.verdict
    facts = [("verdict", f'<b class="verdict-{esc(verdict)}">{esc(verdict)}</b>'),
             ("kind", esc(run.kind)), ("profile", esc(run.profile)), ("lab", esc(run.lab)),
             ("build", f"{esc(run.build_label)} (package set {esc(run.build_hash)}, "
                       f"{len(run.build_packages)} packages)"),
             *((("changed since the baseline", _package_changes(run, baseline)),)
               if baseline is not None and baseline.build_hash != run.build_hash else ()),
             ("baseline", esc(f"run {baseline.id}: {baseline.build_label}, "
                              f"{baseline.started:%Y-%m-%d %H:%M} UTC")
              if baseline is not None and baseline.started is not None
              else "none: no passed nightly or qualification run of this profile on "
                   "this lab yet"),
             ("started", esc(f"{run.started:%Y-%m-%d %H:%M:%S} UTC" if run.started else "")),
             ("ended", esc(f"{run.ended:%Y-%m-%d %H:%M:%S} UTC" if run.ended else "")),
             ("runner", esc(f"{run.runner}, harness {run.revision or 'not from git'}"))]
    listing = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts)
    host_rows = "".join(
        "<tr>" + "".join(f"<td>{esc(value)}</td>" for value in (
            host.name, host.xen_version, host.xen_cmdline, host.dom0_kernel, host.cpu_model,
            host.microcode, host.firmware, host.bmc_firmware)) + "</tr>"
        for host in run.hosts)
    flags = "".join(f"<li>{esc(flag.test_id)}: {esc(flag.name)} {flag.value:g} {esc(flag.unit)}"
                    f" ({esc(flag.change)} against the median {flag.median:g} of "
                    f"{flag.runs} baseline runs)</li>" for flag in comparison.figure_flags)
    return (f"<dl>{listing}</dl>"
            "<table><tr><th>host</th><th>Xen</th><th>Xen command line</th><th>dom0 kernel"
            "</th><th>CPU</th><th>microcode</th><th>firmware</th><th>BMC firmware</th></tr>"
            f"{host_rows}</table>"
            + (f"<h2>Figures worse than their baseline</h2><ul>{flags}</ul>" if flags
               else ""))


def write_html(reports: Path, title: str, results: list[TestResult], *,
               analysis: Analysis | None = None) -> Path:
    esc = html.escape
    tally = counts(results)
    sections = "".join(
        f"<h2>{esc(area)}</h2><table><tr><th>status</th><th>against the baseline</th>"
        "<th>host</th><th>test</th><th>time</th><th>evidence</th><th>bugs</th></tr>"
        + "".join(_row(result, analysis) for result in members) + "</table>"
        for area, members in _by_area(results).items())
    com1_logs = " ".join(f'<a href="com1/{esc(p.name)}">{esc(p.stem)}</a>'
                         for p in sorted((reports / "com1").glob("*.log")))
    plots = "".join(f'<figure><img src="plots/{esc(p.name)}" alt="{esc(p.stem)}">'
                    f"<figcaption>{esc(p.stem.replace('-', ' '))}</figcaption></figure>"
                    for p in sorted((reports / "plots").glob("*.png")))
    trends = sorted((reports / "plots" / "trends").glob("*.png"))
    if trends:
        plots += (f"<details><summary>Each figure over the last runs ({len(trends)})"
                  "</summary>" + "".join(f'<img src="plots/trends/{esc(p.name)}" '
                                         f'alt="{esc(p.stem)}">' for p in trends)
                  + "</details>")
    extra_pages = " ".join(f'<a href="{page}">{text}</a>' for page, text in (
        ("qualification.html", "qualification summary"),
        ("allure-report/index.html", "Allure report")) if (reports / page).exists())
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{esc(title)}</h1>
{_header(analysis)}
<p>{", ".join(f"{count} {status}" for status, count in tally.items())}.
failed = the product (Xen) misbehaved; broken = the lab did.</p>
<p>Whole com1 log of every host: {com1_logs or "none"}. Also: <a href="junit.xml">junit.xml</a>,
<a href="allure-results/">allure-results</a>. {extra_pages}</p>
{plots}
{sections}
</body></html>
"""
    out = reports / "index.html"
    out.write_text(page)
    return out


# Characters XML 1.0 forbids (com1 output brings ANSI escapes and NULs into messages):
# ElementTree writes them as they are, and the file would not parse.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(text: str) -> str:
    return _NOT_XML.sub(lambda match: f"#x{ord(match.group()):02X}", text)


_JUNIT_ELEMENT = {"failed": "failure", "broken": "error", "skipped": "skipped"}


def _junit_element(status: str) -> str | None:
    """The junit element of an allure status, None for passed. Any other status (unknown,
    missing) is an error: nothing says the test passed."""
    return None if status == "passed" else _JUNIT_ELEMENT.get(status, "error")


def write_junit(reports: Path, results: list[TestResult]) -> Path:
    """reports/junit.xml from allure results: failed -> <failure> (the product),
    broken -> <error> (the lab), skipped -> <skipped>."""
    outcomes = [(result, _junit_element(result.status)) for result in results]
    tally = Counter(element for _, element in outcomes)
    suite = ET.Element("testsuite", {
        "name": "xen-hil",
        "tests": str(len(results)),
        "failures": str(tally["failure"]),
        "errors": str(tally["error"]),
        "skipped": str(tally["skipped"]),
        "time": f"{sum(result.duration_s for result in results):.3f}",
    })
    for result, element in outcomes:
        case = ET.SubElement(suite, "testcase", {
            "classname": _xml_text(result.module),
            "name": _xml_text(result.name),
            "time": f"{result.duration_s:.3f}",
        })
        if element is None:
            continue
        message = result.message or f"allure status {result.status}"
        outcome = ET.SubElement(case, element, {"message": _xml_text(message)})
        outcome.text = _xml_text("\n\n".join(part for part in (message, result.trace) if part))
    # The root pytest writes too: consumers read both runs' junit.xml alike.
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    out = reports / "junit.xml"
    ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)
    return out


def junit_older_than_results(reports: Path) -> bool:
    """Whether reports/junit.xml is older than the newest allure result. pytest writes
    junit.xml after every result of its run, so an older one is likely left by an earlier
    run with the same run id (whose allure results the rerun cleaned)."""
    newest_result = max((path.stat().st_mtime_ns
                         for path in (reports / "allure-results").glob("*-result.json")),
                        default=0)
    return (reports / "junit.xml").stat().st_mtime_ns < newest_result
