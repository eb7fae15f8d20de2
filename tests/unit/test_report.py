"""Reports rebuilt from allure-results, as after a run killed with SIGKILL: junit.xml,
index.html and `xenhil report`. The result files have the shape allure-pytest 2.16 writes."""

from __future__ import annotations

import json
import os
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cli import main
from harness.lab import DEFAULT_LAB
from harness.report import read_results, write_html, write_junit
from harness.results.analysis import Analysis
from harness.results.compare import compare
from harness.results.records import HostRecord, ResultRecord, RunRecord

BOOT = "testsuites.boot.test_boot"
START_MS = 1_796_121_943_000
PANIC_TRACE = ("def test_xen_version(host):\n>       host.expect_xen_version()\n"
               "E   harness.errors.ProductFailure: (XEN) Panic on CPU 0\n\n"
               "testsuites/boot/test_boot.py:31: ProductFailure")


def write_result(allure_dir: Path, name: str, status: str | None, *, module: str = BOOT,
                 seconds: float = 1.0, message: str | None = None,
                 trace: str | None = None, start_ms: int = START_MS) -> None:
    """One test's result file; allure-pytest leaves out what is None (here: status)."""
    test_uuid = str(uuid.uuid4())
    attachment = f"{uuid.uuid4()}-attachment.txt"
    (allure_dir / attachment).write_text("com1 slice")
    data: dict[str, Any] = {
        "name": name,
        "start": start_ms,
        "stop": start_ms + int(seconds * 1000),
        "uuid": test_uuid,
        "historyId": test_uuid.replace("-", ""),
        "fullName": f"{module}#{name.split('[')[0]}",
        "labels": [{"name": "suite", "value": module}, {"name": "lab_host", "value": "vlab1"},
                   {"name": "framework", "value": "pytest"}],
        "attachments": [{"name": "vlab1 com1", "source": attachment, "type": "text/plain"}],
        "titlePath": [module.replace(".", "/") + ".py"],
    }
    if status is not None:
        data["status"] = status
    if message is not None or trace is not None:
        data["statusDetails"] = {"message": message, "trace": trace}
    (allure_dir / f"{test_uuid}-result.json").write_text(json.dumps(data))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """reports/<run-id>/ of a run killed after six tests ended."""
    run = tmp_path / "reports" / "20250101T000000Z"
    allure_dir = run / "allure-results"
    allure_dir.mkdir(parents=True)
    write_result(allure_dir, "test_dom0_boots[vlab1]", "passed", seconds=2.5)
    write_result(allure_dir, "test_xen_version[vlab1]", "failed", seconds=40,
                 message="ProductFailure: (XEN) Panic on CPU 0\x1b[0m", trace=PANIC_TRACE)
    write_result(allure_dir, "test_bridge_ping", "broken",
                 module="testsuites.networking.test_bridge",
                 message="InfrastructureError: vlab2: BMC does not answer",
                 trace="E   harness.errors.InfrastructureError: vlab2: BMC does not answer")
    write_result(allure_dir, "test_npiv_disk", "skipped", module="testsuites.storage.npiv",
                 message="Skipped: no NPIV HBA on vlab1")
    write_result(allure_dir, "test_unknown", "unknown")
    write_result(allure_dir, "test_no_status", None)
    return run


def parse_junit(path: Path) -> ET.Element:
    suites = ET.parse(path).getroot()  # fails on characters XML forbids
    assert suites.tag == "testsuites"
    [suite] = suites
    return suite


def case_named(suite: ET.Element, name: str) -> ET.Element:
    [case] = [case for case in suite.iter("testcase") if case.get("name") == name]
    return case


def test_junit_counts_every_status(run_dir: Path) -> None:
    suite = parse_junit(write_junit(run_dir, read_results(run_dir / "allure-results")))
    assert suite.get("name") == "xen-hil"
    # broken (the lab), unknown and a missing status are errors; failed is the product's.
    assert {key: suite.get(key) for key in ("tests", "failures", "errors", "skipped")} == {
        "tests": "6", "failures": "1", "errors": "3", "skipped": "1"}
    assert suite.get("time") == "46.500"  # 2.5 + 40 + four of 1 s
    assert len(suite.findall("testcase")) == 6


def test_junit_testcase_elements(run_dir: Path) -> None:
    suite = parse_junit(write_junit(run_dir, read_results(run_dir / "allure-results")))

    passed = case_named(suite, "test_dom0_boots[vlab1]")
    assert (passed.get("classname"), passed.get("time")) == (BOOT, "2.500")
    assert list(passed) == []

    [failure] = case_named(suite, "test_xen_version[vlab1]")
    assert failure.tag == "failure"
    # The escape character com1 brought in is spelled out, not written raw.
    assert failure.get("message") == "ProductFailure: (XEN) Panic on CPU 0#x1B[0m"
    assert failure.text is not None
    assert failure.text.startswith("ProductFailure: (XEN) Panic")
    assert "testsuites/boot/test_boot.py:31: ProductFailure" in failure.text

    broken = case_named(suite, "test_bridge_ping")
    assert broken.get("classname") == "testsuites.networking.test_bridge"
    [error] = broken
    assert error.tag == "error"
    assert error.get("message") == "InfrastructureError: vlab2: BMC does not answer"
    assert error.text is not None and "E   harness.errors.InfrastructureError" in error.text

    [skipped] = case_named(suite, "test_npiv_disk")
    assert (skipped.tag, skipped.get("message")) == ("skipped", "Skipped: no NPIV HBA on vlab1")

    for name in ("test_unknown", "test_no_status"):
        [no_verdict] = case_named(suite, name)
        assert (no_verdict.tag, no_verdict.get("message")) == ("error", "allure status unknown")


def test_index_html_lists_every_result(run_dir: Path) -> None:
    page = write_html(run_dir, "killed run", read_results(run_dir / "allure-results")).read_text()
    assert "1 failed, 1 broken, 1 passed, 1 skipped, 2 unknown." in page
    assert "testsuites/boot/test_boot.py::test_xen_version[vlab1]" in page
    assert page.count('<tr class="unknown">') == 2


def lab_file(tmp_path: Path, reports: Path) -> Path:
    """The virtual lab's file with its reports elsewhere (its key files need not exist)."""
    data = yaml.safe_load(DEFAULT_LAB.read_text())
    data["xenhil"]["reports"] = str(reports)
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_report_command_by_run_id(run_dir: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    lab = lab_file(tmp_path, run_dir.parent)
    assert main(["--lab", str(lab), "report", run_dir.name]) == 0
    out = capsys.readouterr().err
    assert f"{run_dir / 'junit.xml'} (from allure-results)" in out
    assert "1 failed, 1 broken, 1 passed, 1 skipped, 2 unknown" in out
    assert "test_xen_version[vlab1]" in (run_dir / "index.html").read_text()
    assert parse_junit(run_dir / "junit.xml").get("tests") == "6"


def test_report_command_keeps_pytests_junit(run_dir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    junit = run_dir / "junit.xml"
    junit.write_text("<testsuites>pytest's own</testsuites>")
    assert main(["report", str(run_dir)]) == 0
    assert junit.read_text() == "<testsuites>pytest's own</testsuites>"
    assert f"{junit} kept (pytest's" in capsys.readouterr().err
    assert (run_dir / "index.html").is_file()


def test_report_command_flags_a_junit_older_than_the_results(
        run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junit = run_dir / "junit.xml"
    junit.write_text("<testsuites>an earlier run's</testsuites>")
    an_hour_ago = junit.stat().st_mtime - 3600
    os.utime(junit, (an_hour_ago, an_hour_ago))
    assert main(["report", "--reports", str(run_dir.parent), run_dir.name]) == 0
    assert "older than allure-results" in capsys.readouterr().err
    assert junit.read_text() == "<testsuites>an earlier run's</testsuites>"


def test_report_command_errors(run_dir: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    reports = run_dir.parent
    assert main(["report", "--reports", str(reports), "no-such-run"]) == 2
    assert f"{reports / 'no-such-run'}: no such run directory" in capsys.readouterr().err

    not_a_run = tmp_path / "elsewhere"
    not_a_run.mkdir()
    assert main(["report", str(not_a_run)]) == 2
    assert f"{not_a_run / 'allure-results'}: not found" in capsys.readouterr().err

    killed_early = reports / "killed-early"
    (killed_early / "allure-results").mkdir(parents=True)
    assert main(["report", str(killed_early)]) == 2
    assert "no test result" in capsys.readouterr().err
    assert not (killed_early / "index.html").exists()


def analysed_run(run_dir: Path) -> Analysis:
    """The run of `run_dir` as the results database gives it back, against a baseline
    where test_dom0_boots failed and test_xen_version passed, with a known issue for the
    broken-down bridge test."""
    ids = {result.name: result.test_id for result in read_results(run_dir / "allure-results")}
    now = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    baseline = RunRecord(
        id="nightly-1", profile="default", lab="vlab", kind="nightly",
        build_label="xen-hypervisor-4.17-amd64 4.17.7", started=now, verdict="passed",
        results=(ResultRecord(ids["test_dom0_boots[vlab1]"], "failed"),
                 ResultRecord(ids["test_xen_version[vlab1]"], "passed")))
    run = RunRecord(
        id=run_dir.name, profile="default", lab="vlab", kind="nightly",
        build_label="xen-hypervisor-4.17-amd64 4.17.8", build_hash="0123abcd",
        build_packages=("xen-hypervisor-4.17-amd64 4.17.8 amd64",), started=now,
        hosts=(HostRecord("vlab1", xen_version="4.17.8", dom0_kernel="6.1.0-28-amd64",
                          cpu_model="QEMU Virtual CPU <v2>", microcode="0x1",
                          firmware="SeaBIOS 1.16.2", bmc_firmware="0.01"),),
        results=(ResultRecord(ids["test_dom0_boots[vlab1]"], "passed"),
                 ResultRecord(ids["test_xen_version[vlab1]"], "failed",
                              message="ProductFailure: (XEN) Panic on CPU 0")))
    comparison = compare(run, baseline, known=[], ever_passed=set(), figure_history=[],
                         today=date(2026, 12, 1))
    return Analysis(run, baseline, comparison)


def test_index_html_header_labels_and_areas(run_dir: Path) -> None:
    page = write_html(run_dir, "nightly", read_results(run_dir / "allure-results"),
                      analysis=analysed_run(run_dir)).read_text()
    # The header: what was tested where, the verdict and what it was compared with.
    assert "xen-hypervisor-4.17-amd64 4.17.8 (package set 0123abcd, 1 packages)" in page
    assert '<b class="verdict-regressed">regressed</b>' in page
    assert "run nightly-1: xen-hypervisor-4.17-amd64 4.17.7, 2026-12-01 02:00 UTC" in page
    assert "<td>SeaBIOS 1.16.2</td>" in page and "&lt;v2&gt;" in page  # host text escaped
    # The failed test that passed in the baseline is the regression, named in its row.
    regression = page.split('<td class="label-regression">')[1].split("</tr>")[0]
    assert "passed in baseline nightly-1" in regression
    assert "test_boot.py::test_xen_version[vlab1]" in regression
    # Sections by area in run order; tests without an area under "other".
    assert page.index("<h2>other</h2>") > 0


def test_index_html_without_the_database_says_so(run_dir: Path) -> None:
    page = write_html(run_dir, "killed", read_results(run_dir / "allure-results")).read_text()
    assert "Not in the results database" in page
    assert "label-" not in page.split("</style>")[1]


def test_results_are_in_run_order(tmp_path: Path) -> None:
    allure_dir = tmp_path / "allure-results"
    allure_dir.mkdir()
    for offset, name in ((3, "test_c"), (1, "test_a"), (2, "test_b")):
        write_result(allure_dir, name, "passed", start_ms=START_MS + offset * 1000)
    assert [r.name for r in read_results(allure_dir)] == ["test_a", "test_b", "test_c"]
