"""The results recorder in a real pytest session with allure-pytest: tiny tests run in
a subprocess, their rows read back from the database."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from harness.results.db import ResultsDB
from harness.results.recorder import plain_verdict, result_from_allure
from harness.results.records import Figure, HostRecord, RunRecord

TESTS = textwrap.dedent('''
    from pathlib import Path

    import allure
    import pytest


    @pytest.mark.parametrize("size", [64])
    def test_measures(figures, size):
        allure.dynamic.label("area", "migration")
        allure.dynamic.label("lab_host", "vlab1")
        allure.dynamic.label("lab_host", "vlab2")
        with allure.step("migrate"):
            allure.attach("xl migrate transcript", name="vlab1 commands",
                          attachment_type=allure.attachment_type.TEXT)
        figures.add("downtime", 0.25, "s")
        figures.add("throughput", 940.5, "Mbit/s")


    def test_fails():
        allure.dynamic.label("area", "networking")
        allure.dynamic.issue("https://bugzilla.suse.com/1234567", name="bsc#1234567")
        assert 1 + 1 == 3, "arithmetic regressed"


    def test_breaks():
        raise ConnectionError("BMC gone")


    @pytest.mark.skip(reason="needs fc_hba")
    def test_skipped():
        pass


    def test_boots_a_host(request):
        class Unreachable:  # what gather() uses of a host, here one that answers nothing
            name = "vlab1"
            power = None

            def run(self, command, check=True):
                raise ConnectionError("no route to host")

        request.config.hook.pytest_xenhil_host_booted(host=Unreachable())


    def test_fails_once():
        marker = Path(__file__).with_name("tried-once")
        if not marker.exists():
            marker.write_text("")
            raise AssertionError("first try fails")
''')


def run_pytest(where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:labgrid",
         "--alluredir", str(where / "allure-results"), *args, "test_tiny.py"],
        cwd=where, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "test_tiny.py").write_text(TESTS)
    return tmp_path


def test_each_test_is_recorded_with_status_figures_and_attempt(project: Path) -> None:
    url = f"sqlite:///{project}/results.sqlite"
    db = ResultsDB.open(url)
    try:
        db.start_run(RunRecord("r1", "default", "vlab", "nightly", started=datetime.now(UTC)))
        first = run_pytest(project, "--results-db", url, "--record-run", "--run-id", "r1")
        assert first.returncode == 1, first.stdout + first.stderr
        retest = run_pytest(project, "--results-db", url, "--record-run", "--run-id", "r1",
                            "--attempt", "2", "-k", "test_fails_once")
        assert retest.returncode == 0, retest.stdout + retest.stderr
        run = db.get_run("r1")
    finally:
        db.close()

    assert run is not None and run.verdict == "" and run.ended is None  # the caller's
    assert run.hosts == (HostRecord("vlab1"),)  # a host that told nothing: recorded empty
    by_id = {(result.test_id, result.attempt): result for result in run.results}
    assert [(test_id, attempt, by_id[test_id, attempt].status) for test_id, attempt
            in by_id] == [
        ("test_tiny.py::test_measures[64]", 1, "passed"),
        ("test_tiny.py::test_fails", 1, "failed"),
        ("test_tiny.py::test_breaks", 1, "broken"),
        ("test_tiny.py::test_skipped", 1, "skipped"),
        ("test_tiny.py::test_boots_a_host", 1, "passed"),
        ("test_tiny.py::test_fails_once", 1, "failed"),
        ("test_tiny.py::test_fails_once", 2, "passed"),
    ]
    measures = by_id["test_tiny.py::test_measures[64]", 1]
    assert measures.figures == (Figure("downtime", 0.25, "s"),
                                Figure("throughput", 940.5, "Mbit/s"))
    assert measures.area == "migration" and measures.hosts == ("vlab1", "vlab2")
    # the step's attachment, and the figures table the harness's plugin attaches
    attached = {(project / path).read_text() for path in measures.evidence}
    assert "xl migrate transcript" in attached
    assert any("940.500 Mbit/s" in text for text in attached)
    fails = by_id["test_tiny.py::test_fails", 1]
    assert "arithmetic regressed" in fails.message and fails.area == "networking"
    assert fails.bugs == ("https://bugzilla.suse.com/1234567",)
    assert fails.figures == () and fails.duration_s >= 0
    assert "BMC gone" in by_id["test_tiny.py::test_breaks", 1].message
    assert "needs fc_hba" in by_id["test_tiny.py::test_skipped", 1].message


def test_without_record_run_the_session_records_its_own_run(project: Path) -> None:
    url = f"sqlite:///{project}/results.sqlite"
    done = run_pytest(project, "--results-db", url, "-k", "test_measures or test_skipped")
    assert done.returncode == 0, done.stdout + done.stderr
    db = ResultsDB.open(url)
    try:
        (listed,) = db.runs()
        run = db.get_run(listed.id)
    finally:
        db.close()
    assert run is not None
    assert (run.kind, run.lab, run.verdict) == ("adhoc", "vlab", "passed")
    assert run.started is not None and run.ended is not None and run.ended >= run.started
    assert "@" in run.runner
    assert [result.status for result in run.results] == ["passed", "skipped"]


def test_record_run_needs_the_run_recorded(project: Path) -> None:
    done = run_pytest(project, "--results-db", f"sqlite:///{project}/results.sqlite",
                      "--record-run", "--run-id", "never-made")
    assert done.returncode == 4 and "has no run never-made" in done.stderr


def test_results_db_needs_alluredir(project: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:labgrid",
         "--results-db", f"sqlite:///{project}/results.sqlite", "test_tiny.py"],
        cwd=project, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 4 and "--alluredir" in done.stderr


def test_an_unknown_allure_status_is_broken() -> None:
    record = result_from_allure({"status": "unknown", "start": 1000, "stop": 3500,
                                 "statusDetails": {"message": "no report"}},
                                test_id="t::a")
    assert (record.status, record.message, record.duration_s) == (
        "broken", "allure status unknown: no report", 2.5)


@pytest.mark.parametrize(("statuses", "verdict"), [
    ([], "broken"), (["passed", "skipped"], "passed"), (["passed", "failed"], "failed"),
    (["failed", "broken"], "broken")])
def test_plain_verdict(statuses: list[str], verdict: str) -> None:
    assert plain_verdict(statuses) == verdict
