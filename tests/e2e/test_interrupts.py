"""`xenhil run` stopped from outside, on the virtual lab: SIGTERM ends it with its reports
written and nothing left running; after a SIGKILL the next run finds what the killed
one left, stops it, and passes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from harness.lab import Lab
from harness.paths import PROJECT_ROOT
from harness.vlab import control

from .conftest import lab_processes
from .test_run import XENHIL, allure_results

REPORTS = PROJECT_ROOT / "reports"
# A one-host run on a fresh lab: plain Debian boots, no build to install.
PLAIN_HOST_RUN = ("--hosts", "vlab1", "--test", "tests/e2e/scenarios/plain_host_support.py")


def start_run(run_id: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([*XENHIL, "run", "--run-id", run_id, *args], cwd=PROJECT_ROOT,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def wait_for_output(log: Path, text: str, process: subprocess.Popen[bytes],
                    timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert process.poll() is None, f"the run ended early:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{text!r} not printed:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)


def test_sigterm_mid_test_writes_reports_and_leaves_nothing(vlab_cleaned: Lab,
                                                           tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    run = start_run("e2e-sigterm", log, "--profile", "boot", "--hosts", "vlab1")
    try:
        # The first test's setup is under way: the host is booting to be installed.
        wait_for_output(log, "vlab1: firmware after", run)
        run.send_signal(signal.SIGTERM)
        returncode = run.wait(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    output = log.read_text(errors="replace")
    assert returncode == 128 + signal.SIGTERM, output[-4000:]
    assert "xen-hil run interrupted" in output
    reports = REPORTS / "e2e-sigterm"
    assert (reports / "index.html").exists() and (reports / "junit.xml").exists()
    interrupted = [r for r in allure_results(reports).values() if r["status"] == "broken"]
    assert len(interrupted) == 1, allure_results(reports)
    assert "interrupted" in interrupted[0]["statusDetails"]["message"]
    junit = (reports / "junit.xml").read_text()
    assert 'errors="1"' in junit and "interrupted" in junit, junit
    assert lab_processes(vlab_cleaned) == []
    assert control.read_owner(vlab_cleaned) is None


def test_run_after_a_sigkill_cleans_up_and_passes(vlab_cleaned: Lab, tmp_path: Path) -> None:
    log = tmp_path / "killed.log"
    killed = start_run("e2e-sigkill", log, "--profile", "boot", "--hosts", "vlab1")
    try:
        wait_for_output(log, "vlab1: firmware after", killed)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
        left = lab_processes(vlab_cleaned)
        assert any("QEMU" in process for process in left), left  # what it left behind
        owner = control.read_owner(vlab_cleaned)
        assert owner is not None and owner["run_id"] == "e2e-sigkill", owner
        # The next run: a host without any build yet, as a fresh lab has it.
        done = subprocess.run(
            [*XENHIL, "run", "--run-id", "e2e-after-sigkill", *PLAIN_HOST_RUN],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1200)
    finally:
        if killed.poll() is None:
            killed.kill()
    output = done.stdout + done.stderr
    assert "was left running by run e2e-sigkill" in output, output[-4000:]
    assert done.returncode == 0, output[-4000:]
    statuses = {name: r["status"] for name, r in
                allure_results(REPORTS / "e2e-after-sigkill").items()}
    assert list(statuses.values()) == ["passed"], statuses
    assert lab_processes(vlab_cleaned) == []
    assert control.read_owner(vlab_cleaned) is None
