"""Bug hunting around the search: reproduce's attempts, the series ordered from small
.deb builds this test makes with dpkg-deb, the lab runner's reading of a run, the
bisection page, and the two commands with a scripted runner in place of the lab."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from harness import cli
from harness.bughunt import commands, lab_steps
from harness.bughunt.bisect import Confirm, bisect
from harness.bughunt.lab_steps import last_failed_host, node_id, step_result
from harness.bughunt.page import write_page
from harness.bughunt.reproduce import RunEvent, reproduce
from harness.bughunt.series import bisection_series, builds_in, order_by_version, read_build
from harness.bughunt.steps import Interrupted, StepResult
from harness.errors import ConfigError, InfrastructureError, SignalInterrupt
from harness.lab import DEFAULT_LAB, load_lab
from harness.results.db import ResultsDB, resolve_url
from harness.results.records import ResultRecord, RunRecord
from harness.runner import Recording, RunOutcome, interrupting_signals

TEST = "testsuites/networking/test_bridged.py::test_bridged_guest_talks_to_dom0"


class Scripted:
    """Answers run after run with the next status (the last one repeats); writes each
    run's reports directory as the lab would, when given one."""

    def __init__(self, statuses: list[str] | dict[str, list[str]],
                 reports: Path | None = None, interrupt_at: int | None = None) -> None:
        self.statuses = statuses
        self.reports = reports
        self.interrupt_at = interrupt_at
        self.calls: list[tuple[str, Path | None, str, str]] = []
        self.reuse_booted = False
        self.closed = False

    def __enter__(self) -> Scripted:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.closed = True

    def run(self, test_id: str, build: Path | None, host: str,
            attempt_label: str) -> StepResult:
        self.calls.append((test_id, build, host, attempt_label))
        script = self.statuses if isinstance(self.statuses, list) else \
            self.statuses[build.name if build else ""]
        status = script.pop(0) if len(script) > 1 else script[0]
        reports = None
        if self.reports is not None:
            reports = self.reports / attempt_label
            (reports / "com1").mkdir(parents=True)
            (reports / "index.html").write_text("run")
            (reports / "com1" / f"{host}.log").write_text("com1")
            (reports / "allure-results").mkdir()
            (reports / "allure-results" / "slice.txt").write_text("slice")
        result = StepResult(status, attempt_label, reports, f"{status}: vif-bridge says no",
                            12.0, (host,), ("allure-results/slice.txt",))
        if len(self.calls) == self.interrupt_at:
            raise Interrupted(signal.SIGTERM, result)
        return result


# reproduce

def test_reproduce_runs_count_times_and_reports_the_rate() -> None:
    runner = Scripted(["passed", "failed", "passed", "failed", "broken"])
    events: list[RunEvent] = []
    outcome = reproduce(runner, TEST, "vlab1", Path("/b"), 5, hunt_id="repro-t",
                        on_run=events.append)
    assert outcome.rate == "2/5" and outcome.exit_code == 1
    assert [call[3] for call in runner.calls] == [f"repro-t-try0{n}" for n in range(1, 6)]
    assert {(call[1], call[2]) for call in runner.calls} == {(Path("/b"), "vlab1")}
    assert [(e.label, e.done, e.planned) for e in events][:2] == [
        ("attempt 1/5", 1, 5), ("attempt 2/5", 2, 5)]


@pytest.mark.parametrize(("until", "statuses", "attempts", "code"), [
    ("fail", ["passed", "passed", "failed", "passed"], 3, 1),
    ("pass", ["failed", "broken", "passed", "failed"], 3, 1),
    ("fail", ["passed"], 4, 0),
    (None, ["passed", "broken"], 4, 2),
])
def test_reproduce_until(until: str | None, statuses: list[str], attempts: int,
                         code: int) -> None:
    outcome = reproduce(Scripted(statuses), TEST, "vlab1", None, 4, until=until,
                        hunt_id="repro-t")
    assert len(outcome.attempts) == attempts and outcome.exit_code == code


def test_reproduce_stops_when_interrupted_and_keeps_the_attempts() -> None:
    runner = Scripted(["failed"], interrupt_at=2)
    outcome = reproduce(runner, TEST, "vlab1", None, 5, hunt_id="repro-t")
    assert len(runner.calls) == 2 and outcome.rate == "2/2"
    assert outcome.exit_code == 128 + signal.SIGTERM


# the series

def _deb(out: Path, version: str) -> None:
    tree = out / "tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        f"Package: xen-hypervisor-4.17-amd64\nVersion: {version}\nArchitecture: amd64\n"
        "Maintainer: nobody <nobody@example.org>\nDescription: test package\n")
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(tree),
                    str(out / f"hv_{version}_amd64.deb")], check=True, capture_output=True)
    subprocess.run(["rm", "-r", str(tree)], check=True)


@pytest.fixture
def builds(tmp_path: Path) -> Path:
    """Directory names that sort unlike the versions: +x.10 is newest."""
    root = tmp_path / "series"
    for name, version in (("a", "4.17.7-1+x.10"), ("b", "4.17.7-1+x.9"),
                          ("c", "4.17.7-1+x.2"), ("d", "4.17.5-1"), ("e", "4.17.7-1+x.3")):
        (root / name).mkdir(parents=True)
        _deb(root / name, version)
    return root


def test_series_from_a_directory_is_ordered_by_version(builds: Path) -> None:
    ordered = order_by_version(read_build(path) for path in builds_in(builds))
    assert [build.name for build in ordered] == ["d", "c", "e", "b", "a"]
    series = bisection_series(builds / "c", builds / "b", builds_in(builds))
    assert [build.name for build in series] == ["c", "e", "b"]  # d and a are outside


def test_series_refuses_a_good_build_newer_than_the_bad(builds: Path) -> None:
    with pytest.raises(ConfigError, match="is newer than the bad build"):
        bisection_series(builds / "a", builds / "c", [])
    with pytest.raises(ConfigError, match="same build"):
        bisection_series(builds / "a", builds / "a", [])


def test_series_refuses_two_builds_of_one_version(builds: Path) -> None:
    (builds / "twin").mkdir()
    _deb(builds / "twin", "4.17.7-1+x.9")
    with pytest.raises(ConfigError, match=re.escape("same version 4.17.7-1+x.9")):
        bisection_series(builds / "c", builds / "a", builds_in(builds))


def test_builds_in_wants_build_directories(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such directory"):
        builds_in(tmp_path / "none")
    with pytest.raises(ConfigError, match="no build directories"):
        builds_in(tmp_path)


# the lab runner's reading of a run

def test_node_id_leaves_out_a_host_parameter() -> None:
    lab = load_lab(DEFAULT_LAB, check_files=False)
    assert node_id(f"{TEST}[vlab2]", lab) == TEST
    assert node_id(TEST, lab) == TEST
    assert node_id(f"{TEST}[pv]", lab) == f"{TEST}[pv]"


def test_step_result_is_the_worst_first_attempt(tmp_path: Path) -> None:
    results = (ResultRecord(f"{TEST}[a]", "passed", hosts=("vlab1",)),
               ResultRecord(f"{TEST}[b]", "failed", hosts=("vlab1",), message="no vif",
                            evidence=("allure-results/x.txt",)),
               ResultRecord(f"{TEST}[b]", "passed", attempt=2))
    result = step_result("r1", tmp_path, results, 3.0)
    assert result == StepResult("failed", "r1", tmp_path, "no vif", 3.0, ("vlab1",),
                                ("allure-results/x.txt",))
    assert step_result("r1", tmp_path, (), 1.0) is None


def _record(db: ResultsDB, run_id: str, started: datetime, lab: str, status: str,
            host: str) -> None:
    db.start_run(RunRecord(id=run_id, profile="default", lab=lab, kind="nightly",
                           started=started, results=(
                               ResultRecord(f"{TEST}[{host}]", status, hosts=(host,)),)))


def test_last_failed_host_is_the_newest_failure_on_the_lab(tmp_path: Path) -> None:
    lab = load_lab(DEFAULT_LAB, check_files=False)
    db = ResultsDB.open(resolve_url(str(tmp_path / "r.sqlite"), None, tmp_path))
    try:
        assert last_failed_host(db, TEST, lab) is None
        _record(db, "r1", datetime(2026, 1, 1, tzinfo=UTC), lab.name, "failed", "vlab1")
        _record(db, "r2", datetime(2026, 1, 2, tzinfo=UTC), lab.name, "failed", "vlab2")
        _record(db, "r3", datetime(2026, 1, 3, tzinfo=UTC), lab.name, "passed", "vlab1")
        _record(db, "r4", datetime(2026, 1, 4, tzinfo=UTC), "other", "failed", "vlab1")
        assert last_failed_host(db, TEST, lab) == "vlab2"
        assert last_failed_host(db, f"{TEST}[vlab1]", lab) == "vlab2"
    finally:
        db.close()


# the bisection page

def test_page_shows_every_step_and_links_each_run(tmp_path: Path, builds: Path) -> None:
    series = bisection_series(builds / "c", builds / "a", builds_in(builds))  # c e b a
    runner = Scripted({"c": ["passed"], "e": ["passed"], "b": ["failed"], "a": ["failed"]},
                      reports=tmp_path / "reports")
    outcome = bisect(runner, TEST, "vlab1", series, confirm=Confirm(1, 1), hunt_id="bisect-t")
    index = write_page(outcome, tmp_path / "reports" / "bisect-t")
    page = index.read_text()
    summary = json.loads((index.parent / "summary.json").read_text())
    assert summary["verdict"] == "found" and summary["exit_code"] == 0
    assert summary["first_bad"]["name"] == "b" and summary["last_good"]["name"] == "e"
    assert [step["build"]["name"] for step in summary["steps"]] == [
        "c", "a", "b", "e", "e", "b"]
    assert summary["last_failure"]["run_id"] == "bisect-t-step06-run1-try1"
    for step in range(1, 7):
        run = f"bisect-t-step{step:02d}-run1-try1"
        assert f'href="../{run}/index.html"' in page
        assert f'href="../{run}/com1/vlab1.log"' in page
    assert 'href="../bisect-t-step06-run1-try1/allure-results/slice.txt"' in page
    assert "first bad build</dt><dd>b</dd>" in page


# the commands, with the scripted runner in place of the lab's

@pytest.fixture
def lab_file(tmp_path: Path) -> Path:
    """The virtual lab's file, with its reports (and database) in tmp_path."""
    data = yaml.safe_load(DEFAULT_LAB.read_text())
    data["xenhil"]["reports"] = str(tmp_path / "reports")
    data["xenhil"].pop("vlab", None)
    data["xenhil"].pop("single_host_scenarios_on", None)
    data["xenhil"].pop("single_host_scenarios_beside", None)
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Scripted]:
    """What the commands run, by run kind."""
    made: dict[str, Scripted] = {}
    scripts: dict[str, list[str]] = {"c": ["passed"], "e": ["passed"], "b": ["failed"],
                                     "a": ["failed"], "": ["passed", "failed"]}

    def factory(lab_path: Path, *, kind: str, database: str | None,
                reuse_booted: bool = False) -> Scripted:
        made[kind] = Scripted(scripts, reports=tmp_path / "reports")
        made[kind].reuse_booted = reuse_booted
        return made[kind]

    monkeypatch.setattr(commands, "LabStepRunner", factory)
    return made


def test_reproduce_command_prints_each_attempt_and_the_rate(
        lab_file: Path, scripted: dict[str, Scripted],
        capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--lab", str(lab_file), "reproduce", TEST, "--host", "vlab2",
                     "--count", "4", "--until", "fail"])
    err = capsys.readouterr().err
    assert code == 1
    assert [call[2] for call in scripted["repro"].calls] == ["vlab2", "vlab2"]
    assert "attempt 1/4: passed" in err and "attempt 2/4: failed" in err
    assert "failed: vif-bridge says no" in err  # the failure's first line
    assert "2/4 attempts" in err and "spent 0:00:0" in err and "left ~" in err
    assert "failed  : 1/2 (1 passed, 1 failed, 0 broken, 0 skipped)" in err
    run_id = scripted["repro"].calls[1][3]
    assert str(lab_file.parent / "reports" / run_id / "index.html") in err
    # Later attempts use the host as the first left it; the lab is stopped at the end.
    assert scripted["repro"].reuse_booted and scripted["repro"].closed


def test_reproduce_fresh_boot_boots_every_attempt(
        lab_file: Path, scripted: dict[str, Scripted]) -> None:
    cli.main(["--lab", str(lab_file), "reproduce", TEST, "--host", "vlab1", "--count", "1",
              "--fresh-boot"])
    assert not scripted["repro"].reuse_booted


def test_reproduce_without_host_takes_the_last_failure_s_host(
        lab_file: Path, scripted: dict[str, Scripted], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    database = str(tmp_path / "results.sqlite")
    db = ResultsDB.open(resolve_url(database, None, tmp_path))
    try:
        _record(db, "r1", datetime(2026, 1, 1, tzinfo=UTC),
                load_lab(lab_file, check_files=False).name, "failed", "vlab2")
    finally:
        db.close()
    code = cli.main(["--lab", str(lab_file), "reproduce", TEST, "--count", "1",
                     "--db", database])
    assert code == 0 and scripted["repro"].calls[0][2] == "vlab2"
    assert "host: vlab2 (where" in capsys.readouterr().err
    assert cli.main(["--lab", str(lab_file), "reproduce", "x.py::nothing", "--count", "1",
                     "--db", database]) == 2
    assert "give the host with --host" in capsys.readouterr().err


def test_bisect_command_writes_its_page_and_exits_with_the_verdict(
        lab_file: Path, scripted: dict[str, Scripted], builds: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--lab", str(lab_file), "bisect", TEST, "--good", str(builds / "c"),
                     "--bad", str(builds / "a"), "--builds", str(builds), "--host", "vlab1",
                     "--confirm", "1"])
    err = capsys.readouterr().err
    assert code == 0
    assert "verdict   : found (exit 0)" in err
    assert "first bad : b" in err and "last good : e" in err
    assert "step 1 (confirm start) c: run 1: passed" in err
    page = next((lab_file.parent / "reports").glob("bisect-*/summary.json")).with_name(
        "index.html")
    assert f"page      : {page}" in err
    assert json.loads((page.parent / "summary.json").read_text())["verdict"] == "found"
    # only the builds from the good to the bad one, by version
    assert {call[1].name for call in scripted["bisect"].calls if call[1]} == {"c", "e", "b",
                                                                              "a"}


def test_bisect_command_not_reproducible_exit_code(
        lab_file: Path, scripted: dict[str, Scripted], builds: Path) -> None:
    code = cli.main(["--lab", str(lab_file), "bisect", TEST, "--good", str(builds / "c"),
                     "--bad", str(builds / "e"), "--host", "vlab1"])
    assert code == 5  # e passes: nothing to bisect


def test_bisect_command_refuses_bad_input(lab_file: Path, builds: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--lab", str(lab_file), "bisect", TEST, "--good", str(builds / "a"),
                     "--bad", str(builds / "c"), "--host", "vlab1"]) == 2
    assert "is newer than the bad build" in capsys.readouterr().err
    assert cli.main(["--lab", str(lab_file), "bisect", TEST, "--good", str(builds / "c"),
                     "--bad", str(builds / "a"), "--host", "nohost"]) == 2
    assert "unknown host 'nohost'" in capsys.readouterr().err


# the lab runner around harness.runner.run

def _outcome(tmp_path: Path, code: int, results: tuple[ResultRecord, ...]) -> RunOutcome:
    return RunOutcome(code, tmp_path, tmp_path / "index.html", {}, "", "", "",
                      RunRecord(id="r", profile="tests", lab="vlab", kind="bisect",
                                results=results))


def test_lab_runner_runs_the_one_test_on_the_one_host(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, object] = {}

    def run(lab_path: Path, **options: object) -> RunOutcome:
        seen.update(options)
        return _outcome(tmp_path, 1, (ResultRecord(f"{TEST}[vlab2]", "failed",
                                                   hosts=("vlab2",), message="no vif"),))

    monkeypatch.setattr(lab_steps, "run", run)
    runner = lab_steps.LabStepRunner(DEFAULT_LAB, kind="bisect")
    result = runner.run(f"{TEST}[vlab1]", Path("/builds/b1"), "vlab2", "bisect-t-step01")
    assert (result.status, result.message, result.hosts) == ("failed", "no vif", ("vlab2",))
    assert seen["tests"] == [TEST] and seen["hosts"] == ["vlab2"]
    assert seen["build"] == "/builds/b1" and seen["run_id"] == "bisect-t-step01"
    recording = seen["recording"]
    assert isinstance(recording, Recording) and recording.kind == "bisect"


def test_lab_runner_broken_lab_interrupt_and_unknown_test(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runner = lab_steps.LabStepRunner(DEFAULT_LAB, kind="repro")

    def broken_lab(lab_path: Path, **options: object) -> RunOutcome:
        raise InfrastructureError("vlab1's BMC does not answer")

    monkeypatch.setattr(lab_steps, "run", broken_lab)
    result = runner.run(TEST, None, "vlab1", "repro-t-try01")
    assert (result.status, result.message) == ("broken", "vlab1's BMC does not answer")

    monkeypatch.setattr(lab_steps, "run", lambda lab_path, **options: _outcome(
        tmp_path, 143, (ResultRecord(TEST, "broken", message="interrupted"),)))
    with pytest.raises(Interrupted) as interrupted:
        runner.run(TEST, None, "vlab1", "repro-t-try01")
    assert interrupted.value.signum == 15 and interrupted.value.result is not None
    assert interrupted.value.result.message == "interrupted"

    monkeypatch.setattr(lab_steps, "run", lambda lab_path, **options: _outcome(
        tmp_path, 2, ()))
    with pytest.raises(ConfigError, match="selects no test on vlab1"):
        runner.run("testsuites/nothing.py::test_none", None, "vlab1", "repro-t-try01")


def test_ctrl_c_and_sigterm_are_recorded_and_a_second_one_waits() -> None:
    with interrupting_signals() as received:
        with pytest.raises(SignalInterrupt) as first:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs at once; this is never reached
        os.kill(os.getpid(), signal.SIGTERM)  # during the cleanup: only logged
    assert first.value.signum == signal.SIGINT
    assert received == [signal.SIGINT, signal.SIGTERM]
