"""The CLI against the real virtual lab: lab check, power, console."""

from __future__ import annotations

import subprocess
import sys
import time

from harness.lab import Lab
from harness.paths import PROJECT_ROOT

XENHIL = [sys.executable, "-m", "harness.cli"]


def xenhil(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*XENHIL, *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_lab_check_reaches_every_bmc(vlab: Lab) -> None:
    done = xenhil("lab", "check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("answers, power off") == 2


def test_lab_check_names_an_unknown_host(vlab: Lab) -> None:
    done = xenhil("lab", "check", "--hosts", "vlab7")
    assert done.returncode == 2
    assert "unknown host 'vlab7'; this lab has: vlab1, vlab2" in done.stderr


def test_power_and_live_console(vlab: Lab, tmp_path: object) -> None:
    console = subprocess.Popen([*XENHIL, "console", "vlab1", "--log", f"{tmp_path}/c.log"],
                               cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert xenhil("power", "vlab1", "on").stdout.startswith("vlab1: power on")
        assert xenhil("power", "vlab1", "status").stdout.strip() == "vlab1: power on"
        seen = b""
        deadline = time.monotonic() + 120
        assert console.stdout is not None
        while b"SeaBIOS" not in seen and time.monotonic() < deadline:
            seen += console.stdout.read1(4096)  # type: ignore[attr-defined]
        assert b"SeaBIOS" in seen
    finally:
        console.terminate()
        console.wait(timeout=10)
    assert xenhil("power", "vlab1", "off").stdout.startswith("vlab1: power off")
    assert xenhil("power", "vlab1", "status").stdout.strip() == "vlab1: power off"
