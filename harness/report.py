"""The run's HTML report and terminal summary, made from allure-results.

allure-results is the source of truth (each test's status, steps, attachments). The
HTML page is a single self-contained file a person opens the next morning: one row per
test with its host, status and links to its com1 slice, transcripts and boot timeline,
plus links to the whole com1 log of every host.
"""

from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

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
        ))
    results.sort(key=lambda r: (STATUS_ORDER.index(r.status)
                                if r.status in STATUS_ORDER else 9, r.full_name))
    return results


def counts(results: list[TestResult]) -> Counter[str]:
    return Counter(result.status for result in results)


def write_html(reports: Path, title: str, results: list[TestResult]) -> Path:
    esc = html.escape
    tally = counts(results)
    rows = []
    for result in results:
        links = " ".join(f'<a href="allure-results/{esc(source)}">{esc(name)}</a>'
                         for name, source in result.attachments)
        message = (f"<pre>{esc(result.message[:4000])}</pre>" if result.message else "")
        rows.append(
            f'<tr class="{esc(result.status)}"><td>{esc(result.status)}</td>'
            f"<td>{esc(result.host)}</td><td>{esc(result.full_name)}{message}</td>"
            f"<td>{result.duration_s:.1f} s</td><td>{links}</td></tr>")
    com1_logs = " ".join(f'<a href="com1/{esc(p.name)}">{esc(p.stem)}</a>'
                         for p in sorted((reports / "com1").glob("*.log")))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }}
tr.failed td:first-child {{ background: #f4b6b6; }}
tr.broken td:first-child {{ background: #f6d58e; }}
tr.passed td:first-child {{ background: #bfe5bf; }}
tr.skipped td:first-child {{ background: #ddd; }}
pre {{ white-space: pre-wrap; font-size: 85%; margin: 4px 0 0 0; }}
</style></head><body>
<h1>{esc(title)}</h1>
<p>{", ".join(f"{tally[s]} {s}" for s in STATUS_ORDER if tally[s])}.
failed = the product (Xen) misbehaved; broken = the lab did.</p>
<p>Whole com1 log of every host: {com1_logs or "none"}. Also: <a href="junit.xml">junit.xml</a>,
<a href="allure-results/">allure-results</a>.</p>
<table><tr><th>status</th><th>host</th><th>test</th><th>time</th><th>evidence</th></tr>
{"".join(rows)}
</table></body></html>
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
