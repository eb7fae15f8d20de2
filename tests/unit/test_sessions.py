"""A run's sessions (harness.sessions): which tests each host's session gets, and the
sessions beside as real subprocesses, ended in time."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

import pytest

from harness.errors import SignalInterrupt
from harness.lab import DEFAULT_LAB, load_lab
from harness.paths import data_root
from harness.sessions import (
    Collected,
    Session,
    SessionBeside,
    Waves,
    collect,
    interrupting_signals,
    plan,
    run_waves,
)

PYTEST = ["-p", "no:cacheprovider", "-p", "no:labgrid", "-v"]


def test_collection_tells_one_host_tests_from_two_host_ones() -> None:
    tests = collect([str(data_root() / "testsuites"), "--rootdir", str(data_root()),
                     *PYTEST, "--lab", str(DEFAULT_LAB)])
    assert tests is not None
    kinds = {test.test: test.two_hosts for test in tests}
    assert kinds["testsuites/guests/test_lifecycle.py::test_pv_guest_comes_up"] is False
    assert kinds["testsuites/networking/test_bridged.py::"
                 "test_bridged_guests_on_two_hosts_talk"] is True
    assert kinds["testsuites/migration/test_live_migration.py::"
                 "test_live_migration_round_trip"] is True
    # A second host through its own fixture: marked.
    assert kinds["testsuites/storage/npiv/test_npiv.py::"
                 "test_npiv_guest_migrates_with_its_vport"] is True
    # One entry per test function, whatever its parameters (guest types).
    assert len(kinds) == len(tests)


def test_collection_that_fails_gives_none(tmp_path: Path) -> None:
    (tmp_path / "test_broken.py").write_text("import no_such_module_here\n")
    assert collect([str(tmp_path), "--rootdir", str(tmp_path), *PYTEST]) is None


def test_plan_moves_the_paths_of_a_host_beside_to_it() -> None:
    lab = load_lab(DEFAULT_LAB, check_files=False)
    nat = "testsuites/networking/test_nat.py::test_nat_guests_talk_to_dom0_and_each_other"
    two = "testsuites/networking/test_bridged.py::test_bridged_guests_on_two_hosts_talk"
    guest = "testsuites/guests/test_lifecycle.py::test_pv_guest_comes_up"
    migrate = "testsuites/migration/test_live_migration.py::test_live_migration_round_trip"
    waves = plan(lab, [Collected(guest, False), Collected(nat, False), Collected(two, True),
                       Collected(migrate, True)])
    assert waves is not None
    assert waves.here.hosts == ("vlab1",) and waves.here.tests == (guest,)
    assert [(session.hosts, session.tests) for session in waves.beside] \
        == [(("vlab2",), (nat,))]
    # Two-host tests under a path beside still run on both hosts, afterwards.
    assert waves.two_host == (two, migrate)
    # Nothing to run beside: one session, as without the option.
    assert plan(lab, [Collected(guest, False), Collected(two, True)]) is None
    # A path is a prefix of whole names only.
    assert plan(lab, [Collected("testsuites/networking_more/test_x.py::test_y", False)]) \
        is None


def write_tests(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "test_beside.py"
    path.write_text(body)
    return path


def waiting_test(tmp_path: Path) -> tuple[Path, Path]:
    """A test file whose test says it started (a file), then waits 10 min."""
    started = tmp_path / "started"
    return write_tests(tmp_path, "import pathlib, time\n\ndef test_waits():\n"
                                 f"    pathlib.Path({str(started)!r}).touch()\n"
                                 "    time.sleep(600)\n"), started


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within 60 s"
        time.sleep(0.1)


def test_session_beside_runs_and_relays_its_verdicts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tests = write_tests(tmp_path, "def test_one():\n    pass\n\n"
                                  "def test_two():\n    assert 1 == 2\n")
    output = tmp_path / "sessions" / "h2.log"
    caplog.set_level(logging.INFO, logger="harness.sessions")
    session = SessionBeside.start("h2", [str(tests), "--rootdir", str(tmp_path), *PYTEST],
                                  output)
    assert session.wait(120) == 1
    assert session.stop(10) == 1
    text = output.read_text()
    assert "test_beside.py::test_one PASSED" in text and "1 failed, 1 passed" in text
    relayed = [message for message in (record.getMessage() for record in caplog.records)
               if "(beside)" in message]
    assert len(relayed) == 2
    assert "test_beside.py::test_two FAILED" in relayed[1], relayed


def test_session_beside_stops_on_sigterm_with_its_test_interrupted(tmp_path: Path) -> None:
    tests, started_test = waiting_test(tmp_path)
    output = tmp_path / "h2.log"
    session = SessionBeside.start("h2", [str(tests), "--rootdir", str(tmp_path), *PYTEST],
                                  output)
    wait_for(started_test)
    assert session.wait(0.5) is None  # still in its test
    started = time.monotonic()
    assert session.stop(30) == int(pytest.ExitCode.INTERRUPTED)
    assert time.monotonic() - started < 20
    assert "SignalInterrupt" in output.read_text() or "KeyboardInterrupt" in output.read_text()


def _waves(here: str, beside: Path) -> Waves:
    return Waves(Session(("vlab1",), (here,)), (Session(("vlab2",), (str(beside),)),),
                 ("two",))


def test_waves_run_in_order_and_the_second_reuses_the_hosts(tmp_path: Path) -> None:
    lab = load_lab(DEFAULT_LAB, check_files=False)
    beside = write_tests(tmp_path, "def test_beside():\n    pass\n")
    here: list[list[str]] = []

    def pytest_here(args: list[str]) -> int:
        here.append(args)
        return 0

    code = run_waves(_waves("here", beside), lab, tmp_path,
                     ["--rootdir", str(tmp_path), *PYTEST], pytest_here, [],
                     lambda: ["vlab1", "vlab2"])
    assert code == 0
    assert here[0][0] == str(data_root() / "here")
    assert here[0][-4:] == ["--hosts", "vlab1", "--guest-slot", "0/3"]
    assert here[1][0] == str(data_root() / "two")
    assert here[1][-4:] == ["--guest-slot", "2/3", "--booted-earlier", "vlab1,vlab2"]
    assert "1 passed" in (tmp_path / "sessions" / "vlab2.log").read_text()


def test_an_interrupted_run_stops_the_sessions_beside_and_runs_no_second_wave(
        tmp_path: Path) -> None:
    lab = load_lab(DEFAULT_LAB, check_files=False)
    waiting, started_test = waiting_test(tmp_path)
    output = tmp_path / "sessions" / "vlab2.log"
    here: list[list[str]] = []

    def pytest_here(args: list[str]) -> int:
        """Interrupted as the runner's own session is: SIGTERM while its test runs."""
        here.append(args)
        wait_for(started_test)
        try:
            signal.raise_signal(signal.SIGTERM)
            time.sleep(5)
        except SignalInterrupt:
            return int(pytest.ExitCode.INTERRUPTED)
        return 0

    started = time.monotonic()
    with interrupting_signals() as signals:
        code = run_waves(_waves("here", waiting), lab, tmp_path,
                         ["--rootdir", str(tmp_path), *PYTEST], pytest_here, signals,
                         lambda: [])
    assert signals == [signal.SIGTERM]
    assert code == int(pytest.ExitCode.INTERRUPTED)
    assert len(here) == 1  # no second wave
    # The session beside was stopped at once, its test interrupted, not waited for.
    assert time.monotonic() - started < 60
    assert "KeyboardInterrupt" in output.read_text() or "SignalInterrupt" in output.read_text()
