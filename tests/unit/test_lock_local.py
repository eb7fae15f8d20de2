"""Hosts shared without a coordinator: lock files under $XENHIL_CACHE/locks, contended
by runs in processes of their own, and the stale lock a killed run leaves."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.lab import Lab
from harness.locking import HostBusy, hold_hosts, host_locks, lock
from harness.locking.local import LocalHostLock

from .locks import fake_run, lab_with_places


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lab:
    monkeypatch.setenv("XENHIL_CACHE", str(tmp_path / "cache"))
    return lab_with_places(tmp_path)


def lock_file(lab: Lab, host: str) -> Path:
    return Path(os.environ["XENHIL_CACHE"]) / "locks" / f"{lab.host(host).place}.lock"


def test_a_run_in_another_process_is_waited_for(
        lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    got_it = threading.Event()
    errors: list[BaseException] = []

    def wait_for_vlab1() -> None:
        try:
            with hold_hosts(lab, ["vlab1"], wait_minutes=1):
                got_it.set()
        except BaseException as error:
            errors.append(error)

    with fake_run(lab, "vlab1") as child:
        written = json.loads(lock_file(lab, "vlab1").read_text())
        assert written["pid"] == child.pid and written["run_id"] == "child-run"
        holder = host_locks(lab, ["vlab1"])[0].holder()
        assert holder is not None and holder.pid == child.pid and not holder.stale

        with pytest.raises(HostBusy) as busy, hold_hosts(lab, ["vlab1"], wait_minutes=0.02):
            pytest.fail("got a host another process holds")
        assert f"still held by {written['owner']} (run child-run) since" in str(busy.value)

        thread = threading.Thread(target=wait_for_vlab1)
        thread.start()
        assert not got_it.wait(1.5)
        assert any(f"is held by {written['owner']}" in record.getMessage()
                   for record in caplog.records)
        assert child.stdin is not None
        child.stdin.write("done\n")
        child.stdin.flush()
        assert child.wait(10) == 0
    assert got_it.wait(10), errors
    thread.join(10)
    assert not thread.is_alive() and not errors
    assert lock_file(lab, "vlab1").read_text() == ""  # given back: no holder named


def test_a_killed_runs_lock_is_taken_over_with_a_warning(
        lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    with fake_run(lab, "vlab1,vlab2") as child:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    start = time.monotonic()
    with hold_hosts(lab, ["vlab2", "vlab1"], wait_minutes=0):
        assert json.loads(lock_file(lab, "vlab1").read_text())["pid"] == os.getpid()
    assert time.monotonic() - start < 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all("took over the stale lock left by" in warning and
               f":{child.pid} (run child-run)" in warning and
               f"stale: its process {child.pid} is gone" in warning for warning in warnings)


def test_lab_release_clears_a_killed_runs_lock_file(
        lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    with fake_run(lab, "vlab2") as child:
        assert main(["--lab", str(lab.path), "lab", "release", "vlab2"]) == 2
        assert "which still runs: end that run instead" in capsys.readouterr().err
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    assert main(["--lab", str(lab.path), "lab", "release", "vlab2"]) == 0
    said = capsys.readouterr().err
    assert f":{child.pid} (run child-run) since" in said and "released the lock of" in said
    assert lock_file(lab, "vlab2").read_text() == ""
    assert main(["--lab", str(lab.path), "lab", "release", "vlab2"]) == 0
    assert "host vlab2: not locked, nothing to release" in capsys.readouterr().err


def test_locks_are_given_back_when_the_run_fails(lab: Lab) -> None:
    with pytest.raises(RuntimeError), hold_hosts(lab, ["vlab1", "vlab2"], wait_minutes=0):
        raise RuntimeError("a test session that broke")
    assert [host_lock.holder() for host_lock in host_locks(lab)] == [None, None]


def test_sigterm_gives_the_hosts_back(lab: Lab) -> None:
    with fake_run(lab, "vlab1") as child:
        child.terminate()
        assert child.wait(20) != 0
    # The kernel frees the flock of any dead process; an empty file says `finally` ran.
    assert lock_file(lab, "vlab1").read_text() == ""


def test_hosts_are_taken_in_place_order_and_given_back_in_reverse(lab: Lab) -> None:
    events: list[str] = []

    class Recording(LocalHostLock):
        def acquire(self, deadline: float, waiting: object) -> None:
            events.append(f"take {self.place}")

        def release(self) -> None:
            events.append(f"give {self.place}")

    directory = Path(os.environ["XENHIL_CACHE"]) / "locks"
    locks = [Recording(host, place, directory, "test/me:1")
             for host, place in (("b", "rack-b"), ("c", "rack-c"), ("a", "rack-a"))]
    with lock(locks, wait_minutes=0):
        events.append("run")
    assert events == ["take rack-a", "take rack-b", "take rack-c", "run",
                      "give rack-c", "give rack-b", "give rack-a"]


def test_release_of_a_lock_file_held_by_this_process_is_refused(lab: Lab) -> None:
    with hold_hosts(lab, ["vlab1"], wait_minutes=0), pytest.raises(HarnessError):
        host_locks(lab, ["vlab1"])[0].release_left()


def test_a_run_says_when_it_took_and_gave_back_each_host(
        lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    said = re.compile(r"^host (\S+) \(lock file .+\) (locked for this run|given back) at (\S+Z)$")

    def events() -> list[tuple[str, str, float]]:
        found = [said.match(record.getMessage()) for record in caplog.records]
        return [(match[1], match[2], datetime.strptime(match[3], "%Y-%m-%dT%H:%M:%S.%fZ")
                 .replace(tzinfo=UTC).timestamp()) for match in found if match]

    start = time.time()
    with hold_hosts(lab, ["vlab2", "vlab1"], wait_minutes=0):
        time.sleep(0.01)
    assert [event[:2] for event in events()] == [
        ("vlab1", "locked for this run"), ("vlab2", "locked for this run"),
        ("vlab2", "given back"), ("vlab1", "given back")]
    stamps = [event[2] for event in events()]
    assert start <= stamps[0] <= stamps[1] < stamps[2] <= stamps[3] <= time.time()

    # A host that was never got is not said to be given back.
    caplog.clear()
    with fake_run(lab, "vlab2"), pytest.raises(HostBusy), \
            hold_hosts(lab, ["vlab1", "vlab2"], wait_minutes=0):
        pytest.fail("got a host another process holds")
    assert [event[:2] for event in events()] == [("vlab1", "locked for this run"),
                                                  ("vlab1", "given back")]
