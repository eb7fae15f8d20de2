"""A run starts its reports directory afresh."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import runner


@pytest.fixture
def earlier_run(tmp_path: Path) -> Path:
    """reports/<run-id>/ left by an earlier run with the same run id."""
    reports = tmp_path / "rerun"
    for name in ("com1/vlab1.log", "com1/vlab1.raw", "support/vlab1/bundle/index.txt",
                 "junit.xml"):
        (reports / name).parent.mkdir(parents=True, exist_ok=True)
        (reports / name).write_text("the earlier run's\n")
    return reports


def test_a_run_starts_its_reports_afresh(earlier_run: Path) -> None:
    (earlier_run / "allure-results").mkdir()
    (earlier_run / "allure-results" / "x-result.json").write_text("{}")
    (earlier_run / "sessions").mkdir()
    (earlier_run / "sessions" / "vlab2.log").write_text("the earlier run's\n")
    runner._fresh_reports(earlier_run)
    # com1 logs are appended to: the earlier run's must not start this run's.
    assert sorted(path.name for path in earlier_run.iterdir()) == []
