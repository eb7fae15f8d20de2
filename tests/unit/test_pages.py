"""A run's pages from its allure-results and its records: index.html, the qualification
summary, the plots (also as the Allure report's global attachments), figure trends."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from harness.pages import write_pages
from harness.report import read_results
from harness.results.analysis import Analysis
from harness.results.compare import compare
from harness.results.records import Figure, HostRecord, ResultRecord, RunRecord

from .test_report import START_MS, write_result

BOOT = "testsuites/boot/test_boot.py::test_xen_version[vlab1]"
PNG = b"\x89PNG\r\n\x1a\n"


def run_with_figures(run_id: str, day: int, downtime: float,
                     status: str = "passed") -> RunRecord:
    return RunRecord(
        id=run_id, profile="default", lab="vlab", kind="nightly", verdict="passed",
        build_label="xen-hypervisor-4.17-amd64 4.17.7",
        started=datetime(2026, 11, 1, tzinfo=UTC) + timedelta(days=day),
        hosts=(HostRecord("vlab1", xen_version="4.17.7"),),
        results=(ResultRecord(BOOT, status, area="boot", hosts=("vlab1",), figures=(
            Figure("vlab1 boot: xen", 6.9, "s"), Figure("vlab1 boot: ssh", 43.0, "s"),
            Figure("migrate g -> vlab2: time", 25.0, "s"),
            Figure("migrate g -> vlab2: downtime", downtime, "s"),
            Figure("bridged loss", 0.0, "%"), Figure("bridged rtt avg", 0.9, "ms"))),))


def test_pages_of_a_recorded_run(tmp_path: Path) -> None:
    reports = tmp_path / "run-3"
    allure_dir = reports / "allure-results"
    allure_dir.mkdir(parents=True)
    write_result(allure_dir, "test_xen_version[vlab1]", "failed", message="downtime too long",
                 start_ms=START_MS)
    earlier = [run_with_figures("run-1", 1, 4.5), run_with_figures("run-2", 2, 4.6)]
    run = run_with_figures("run-3", 3, 9.0, status="failed")
    comparison = compare(run, earlier[-1], known=[], ever_passed={BOOT},
                         figure_history=earlier, today=date(2026, 12, 1))

    index = write_pages(reports, "run 3", read_results(allure_dir),
                        analysis=Analysis(run, earlier[-1], comparison),
                        history=tmp_path / "history.jsonl", trend_runs=earlier)

    plots = reports / "plots"
    for name in ("boot-timeline.png", "migration.png", "guest-network.png"):
        assert (plots / name).read_bytes().startswith(PNG), name
    trends = sorted(path.name for path in (plots / "trends").glob("*.png"))
    # The flagged figure (downtime doubled against its median) comes first.
    assert trends[0] == "01-test-xen-version-vlab1-migrate-g-vlab2-downtime.png", trends
    assert len(trends) == 6
    page = index.read_text()
    assert '<img src="plots/boot-timeline.png"' in page
    assert 'plots/trends/01-test-xen-version-vlab1-migrate-g-vlab2-downtime.png' in page
    assert "Figures worse than their baseline" in page and "downtime" in page
    qualification = (reports / "qualification.html").read_text()
    assert "REGRESSION" in qualification and "passed in baseline run-2" in qualification

    # The plots are the Allure report's global attachments.
    globals_file = json.loads((allure_dir / "xenhil-plot-globals.json").read_text())
    sources = [attachment["source"] for attachment in globals_file["attachments"]]
    assert len(sources) == 9 and all((allure_dir / source).is_file() for source in sources)
    assert (reports / "allure-report" / "index.html").is_file()
    # The history file has this run, once.
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == 1
    # The copies are not results: index.html still lists the one test.
    assert [result.name for result in read_results(allure_dir)] == ["test_xen_version[vlab1]"]


def test_pages_regenerated_do_not_add_to_the_history(tmp_path: Path) -> None:
    reports = tmp_path / "run-1"
    (reports / "allure-results").mkdir(parents=True)
    write_result(reports / "allure-results", "test_xen_version[vlab1]", "passed")
    history = tmp_path / "history.jsonl"
    history.write_text("")
    write_pages(reports, "run 1", read_results(reports / "allure-results"), analysis=None,
                history=None)
    assert history.read_text() == ""
    assert "Not in the results database" in (reports / "index.html").read_text()
    assert not (reports / "qualification.html").exists()
