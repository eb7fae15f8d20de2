"""Runs sharing the virtual lab (issue 14): through a real labgrid coordinator on
loopback, and without one through the local lock files.

Each run prints when it took and gave back each host (`... locked for this run at T`,
`... given back at T`, UTC); the virtual lab's BMC log (ipmi_sim.log) has a line per
power on and off of its machine. A power action of one run inside another's window on
the same host is what sharing must prevent.

Lab time (2 cores, TCG): the pair and the one-host run ~6 min, the killed run and the
run after it ~2.5 min, the local lock ~5 s.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from harness.lab import Lab
from harness.paths import PROJECT_ROOT, cache_dir
from harness.vlab import control
from tests.unit.locks import fake_run

from .conftest import lab_processes
from .test_interrupts import PLAIN_HOST_RUN, REPORTS, start_run, wait_for_output
from .test_run import XENHIL, allure_results

PAIR_TEST = "test_bridged_guests_on_two_hosts_talk"
STAMP = r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z)"

Window = tuple[float, float]


@pytest.fixture(autouse=True)
def unwrapped_output(monkeypatch: pytest.MonkeyPatch) -> None:
    # Rich wraps the runs' log lines at 80 columns when their output is no terminal.
    monkeypatch.setenv("COLUMNS", "1000")


def xenhil(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*XENHIL, *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=timeout)


def finish(run: subprocess.Popen[bytes], log: Path, timeout: float) -> str:
    """The run's output once it ended (killed if it does not end in time)."""
    try:
        run.wait(timeout)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(30)
    return log.read_text(errors="replace")


def utc(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def lock_windows(output: str) -> dict[str, Window]:
    """Host -> (taken, given back), from what a run printed."""
    taken = {host: utc(stamp) for host, stamp in
             re.findall(rf"host (\S+) \(place .+?\) locked for this run at {STAMP}", output)}
    given = {host: utc(stamp) for host, stamp in
             re.findall(rf"host (\S+) \(place .+?\) given back at {STAMP}", output)}
    assert taken.keys() == given.keys(), (taken, given)
    return {host: (taken[host], given[host]) for host in taken}


def power_actions(lab: Lab, since: float) -> dict[str, list[tuple[float, str]]]:
    """Host -> (time, `power on ...` or `power off ...`) from its BMC's log, since `since`."""
    actions: dict[str, list[tuple[float, str]]] = {}
    for host in control.virtual_hosts(lab):
        lines = re.findall(rf"^{STAMP} (power (?:on|off): .+)$",
                           host.bmc_log.read_text(errors="replace"), re.MULTILINE)
        actions[host.name] = [(utc(stamp), what) for stamp, what in lines
                              if utc(stamp) >= since]
    return actions


def statuses(run_id: str) -> list[str]:
    return [result["status"] for result in allure_results(REPORTS / run_id).values()]


@pytest.mark.long
def test_a_pair_and_a_one_host_run_take_turns_through_the_coordinator(
        vlab_cleaned: Lab, coordinator: str, tmp_path: Path) -> None:
    """A migration-like pair (a two-host test on vlab1 and vlab2) and a one-host run on
    vlab1, started at once: the second waits, saying who holds vlab1 and since when,
    then runs and passes; neither powers a host inside the other's window."""
    start = datetime.now(UTC).timestamp()
    places = xenhil("lab", "places", "--coordinator", coordinator, timeout=60)
    assert places.returncode == 0, places.stderr
    place1, place2 = vlab_cleaned.host("vlab1").place, vlab_cleaned.host("vlab2").place
    assert f"{place1}: created for host vlab1" in places.stderr

    pair_log, one_log = tmp_path / "pair.log", tmp_path / "one.log"
    pair = start_run("e2e-share-pair", pair_log, "--coordinator", coordinator, "--wait", "1",
                     "--", "-k", PAIR_TEST)
    try:
        wait_for_output(pair_log, f"host vlab2 (place {place2} on {coordinator}) locked "
                        "for this run", pair, timeout=120)
        one = start_run("e2e-share-one", one_log, "--coordinator", coordinator,
                        "--wait", "30", *PLAIN_HOST_RUN)
        try:
            wait_for_output(one_log, "waiting (up to 30 min)", one, timeout=120)
            pair_output = finish(pair, pair_log, timeout=1800)
            one_output = finish(one, one_log, timeout=1800)
        finally:
            if one.poll() is None:
                one.kill()
    finally:
        if pair.poll() is None:
            pair.kill()

    assert pair.returncode == 0, pair_output[-5000:]
    assert statuses("e2e-share-pair") == ["passed"]
    assert one.returncode == 0, one_output[-5000:]
    assert statuses("e2e-share-one") == ["passed"]
    waiting = (rf"host vlab1 \(place {place1} on {re.escape(coordinator)}\) is held by "
               rf"\S+/\S+:{pair.pid} since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
    assert re.search(waiting, one_output), one_output[-5000:]

    pair_windows, one_windows = lock_windows(pair_output), lock_windows(one_output)
    assert set(pair_windows) == {"vlab1", "vlab2"} and set(one_windows) == {"vlab1"}
    assert pair_windows["vlab1"][1] < one_windows["vlab1"][0]  # one after the other
    actions = power_actions(vlab_cleaned, since=start)
    for host, host_actions in actions.items():
        for stamp, what in host_actions:
            inside = [name for name, windows in (("pair", pair_windows), ("one", one_windows))
                      if host in windows and windows[host][0] <= stamp <= windows[host][1]]
            assert len(inside) == 1, f"{host} {what} at {stamp}: in the windows of {inside}"

    def powered_on(host: str, window: Window) -> bool:
        return any(what.startswith("power on") and window[0] <= stamp <= window[1]
                   for stamp, what in actions[host])

    # Each run powered its hosts itself, in its own window: the check above has teeth.
    assert powered_on("vlab1", pair_windows["vlab1"]) and powered_on("vlab2",
                                                                     pair_windows["vlab2"])
    assert powered_on("vlab1", one_windows["vlab1"])
    assert lab_processes(vlab_cleaned) == []


@pytest.mark.long
def test_a_killed_runs_lock_is_stale_until_lab_release_frees_it(
        vlab_cleaned: Lab, coordinator: str, tmp_path: Path) -> None:
    """SIGKILL while holding vlab1 on the coordinator: the next run reports the stale
    lock naming the dead holder and starts nothing; `xenhil lab release vlab1` frees it,
    saying whose it was; then a run stops what the killed one left and passes."""
    assert xenhil("lab", "places", "--coordinator", coordinator, timeout=60).returncode == 0
    log = tmp_path / "killed.log"
    killed = start_run("e2e-share-killed", log, "--coordinator", coordinator, *PLAIN_HOST_RUN)
    try:
        wait_for_output(log, "vlab1: firmware after", killed)  # lab up, vlab1 powered on
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(30)
    finally:
        if killed.poll() is None:
            killed.kill()
    left = lab_processes(vlab_cleaned)
    assert any("vlab1 QEMU" in process for process in left), left

    stale = xenhil("run", "--run-id", "e2e-share-stale", "--coordinator", coordinator,
                   "--wait", "0", *PLAIN_HOST_RUN, timeout=120)
    assert stale.returncode == 2, stale.stdout[-3000:] + stale.stderr[-3000:]
    holder = re.search(rf"is still held by (\S+/\S+:{killed.pid}) since .+ - stale: its "
                       rf"process {killed.pid} is gone", stale.stderr)
    assert holder, stale.stderr[-3000:]
    assert "free it with `xenhil lab release vlab1`" in stale.stderr
    assert lab_processes(vlab_cleaned) == left  # it touched nothing of the lab
    assert not (REPORTS / "e2e-share-stale").exists()

    released = xenhil("lab", "release", "vlab1", "--coordinator", coordinator, timeout=60)
    assert released.returncode == 0, released.stderr
    assert f"host vlab1: released the lock of {holder[1]}" in released.stderr

    after = xenhil("run", "--run-id", "e2e-share-after-kill", "--coordinator", coordinator,
                   "--wait", "0", *PLAIN_HOST_RUN)
    output = after.stdout + after.stderr
    assert "was left running by run e2e-share-killed" in output, output[-4000:]
    assert after.returncode == 0, output[-4000:]
    assert statuses("e2e-share-after-kill") == ["passed"]
    assert lab_processes(vlab_cleaned) == []
    assert control.read_owner(vlab_cleaned) is None
    locks = xenhil("lab", "locks", "--coordinator", coordinator, timeout=60)
    assert locks.stdout.count("free") == 2, locks.stdout


def test_without_a_coordinator_a_second_run_names_the_holder_of_the_lock_file(
        vlab_cleaned: Lab, tmp_path: Path) -> None:
    """Two runs on one machine, no coordinator: vlab1's lock file is held by another
    process (a fake run); `xenhil run` waits, saying who holds it, then ends with the
    error naming the holder, having started nothing."""
    with fake_run(vlab_cleaned, "vlab1") as holder:
        done = xenhil("run", "--run-id", "e2e-share-local", "--wait", "0.05", *PLAIN_HOST_RUN,
                      timeout=120)
        assert holder.poll() is None  # still holding it
    output = done.stdout + done.stderr
    place = vlab_cleaned.host("vlab1").place
    lock_file = f"host vlab1 (lock file {cache_dir() / 'locks' / f'{place}.lock'})"
    assert f"{lock_file} is held by " in output and "waiting (up to 0.05 min)" in output
    assert re.search(rf"{re.escape(lock_file)} is still held by \S+/\S+:{holder.pid} "
                     r"\(run child-run\) since .+ after waiting 0\.05 min", output), output
    assert done.returncode == 2
    assert lab_processes(vlab_cleaned) == []
    assert not (REPORTS / "e2e-share-local").exists()
