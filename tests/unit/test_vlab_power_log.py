"""The virtual lab's BMC log: a timestamped line per power on and off of a machine,
kept across restarts of the lab. A real ipmi_sim runs the real power-on script, which
starts a real QEMU; the host lives on 127.0.1.201, away from the virtual lab's hosts
(the machine waits for a com1 reader that never comes, so it uses no CPU)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from harness.ipmi import IPMITool
from harness.lab import DEFAULT_LAB, Lab, load_lab
from harness.vlab import control

POWER_LINE = re.compile(r"^(\S+Z) power (on|off): machine PID (\d+) (started|ended)$")


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    for tool in ("ipmi_sim", "ipmitool", "qemu-system-x86_64", "qemu-img"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (make setup)")
    monkeypatch.setenv("XENHIL_CACHE", str(tmp_path / "cache"))
    data = yaml.safe_load(DEFAULT_LAB.read_text().replace("127.0.1.1", "127.0.1.201"))
    for section in (data["targets"], data["xenhil"]["hosts"], data["xenhil"]["vlab"]["hosts"]):
        del section["vlab2"]
    del data["xenhil"]["single_host_scenarios_beside"]
    data["xenhil"]["vlab"]["hosts"]["vlab1"]["index"] = 201
    data["xenhil"]["vlab"]["memory_mb"] = 64
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    lab = load_lab(path, check_files=False)
    try:
        yield lab
    finally:
        control.down(lab)


def power_lines(lab: Lab) -> list[tuple[float, str, int]]:
    [host] = control.virtual_hosts(lab)
    lines = []
    for line in host.bmc_log.read_text().splitlines():
        match = POWER_LINE.match(line)
        if match:
            stamp = datetime.strptime(match[1], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            lines.append((stamp.timestamp(), match[2], int(match[3])))
    return lines


def wait_lines(lab: Lab, count: int) -> list[tuple[float, str, int]]:
    deadline = time.monotonic() + 30
    while len(lines := power_lines(lab)) < count:
        assert time.monotonic() < deadline, f"{count} power lines expected: {lines}"
        time.sleep(0.1)
    return lines


def test_power_on_and_off_are_logged_with_their_time_across_restarts(
        lab: Lab, tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    [host] = control.virtual_hosts(lab)
    bmc = IPMITool(host.spec.bmc, retries=1)

    control.up(lab, base)
    before_on = time.time()
    bmc.power_on()
    [(on_at, on, pid)] = wait_lines(lab, 1)
    assert on == "on" and before_on - 1 < on_at < time.time()
    # The script writes its line, then execs QEMU: the PID is QEMU's a moment later.
    deadline = time.monotonic() + 10
    while control.host_status(host).qemu_pid != pid:
        assert time.monotonic() < deadline, f"PID {pid} of the power line never ran QEMU"
        time.sleep(0.05)
    before_off = time.time()
    bmc.power_off()
    assert wait_lines(lab, 2)[1][1:] == ("off", pid)
    assert before_off - 1 < power_lines(lab)[1][0] < time.time()

    # A new start of the lab begins a new machine, but the BMC's log goes on.
    control.down(lab)
    control.up(lab, base)
    assert not host.qemu_pid_file.exists()
    bmc.power_on()
    lines = wait_lines(lab, 3)
    assert [line[1] for line in lines] == ["on", "off", "on"] and lines[2][2] != pid
    # The lab's own stop ends the machine: logged as power off too, by the time it
    # returns (a run gives its hosts back right after).
    control.down(lab)
    assert [line[1:] for line in power_lines(lab)[3:]] == [("off", lines[2][2])]
