"""The runner's pytest sessions: a run starts its reports directory afresh, a retest
adds to it."""

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


def test_first_session_starts_afresh(earlier_run: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(pytest, "main", lambda args: seen.append(args) or 0)
    assert runner._pytest(earlier_run, ["testsuites"], first=True) == 0
    # com1 logs are appended to: the earlier run's must not start this run's.
    assert not (earlier_run / "com1").exists() and not (earlier_run / "support").exists()
    assert not (earlier_run / "junit.xml").exists()
    assert "--clean-alluredir" in seen[0] and "--junitxml" in seen[0]


def test_retest_session_adds_to_the_run(earlier_run: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(pytest, "main", lambda args: seen.append(args) or 1)
    assert runner._pytest(earlier_run, ["testsuites"], first=False) == 1
    assert (earlier_run / "com1" / "vlab1.raw").read_text() == "the earlier run's\n"
    assert (earlier_run / "junit.xml").exists()
    assert "--clean-alluredir" not in seen[0] and "--junitxml" not in seen[0]
