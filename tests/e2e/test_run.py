"""The harness end to end on the virtual lab, as a lab engineer runs it.

Each test runs the real thing in a process of its own (`xenhil run`, or pytest on the
self-test scenarios in scenarios/) and then reads what it wrote: allure-results,
junit.xml, com1 logs, the HTML report.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import yaml

from harness.lab import DEFAULT_LAB, Lab
from harness.paths import PROJECT_ROOT

from .conftest import qemu_com1_log

XENHIL = [sys.executable, "-m", "harness.cli"]
SCENARIOS = Path(__file__).parent / "scenarios"


def allure_results(reports: Path) -> dict[str, dict]:
    """Test name (with parameters) -> its allure result."""
    results = {}
    for path in (reports / "allure-results").glob("*-result.json"):
        data = json.loads(path.read_text())
        results[data["name"]] = data
    return results


def attachment(reports: Path, result: dict, name_part: str) -> str:
    for item in result.get("attachments", []):
        if name_part in item["name"]:
            return (reports / "allure-results" / item["source"]).read_text(errors="replace")
    raise AssertionError(f"no attachment named like {name_part!r} in {result['name']}")


def run_scenarios(paths: list[Path], reports: Path,
                  *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", *map(str, paths), "-p", "no:cacheprovider",
         "-p", "no:labgrid",
         "--rootdir", str(PROJECT_ROOT), "--lab", str(DEFAULT_LAB), "--run-id", reports.name,
         "--alluredir", str(reports / "allure-results"), "-o", "log_cli=true",
         "--log-cli-level=INFO", *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=3600)


def test_make_run_default_profile(vlab_stopped: Lab) -> None:
    """What `make run` does: build, start the lab, install 4.17.7 on both hosts, boot,
    run the boot scenarios, write the reports, stop the lab."""
    run_id = "e2e-default"
    done = subprocess.run([*XENHIL, "run", "--run-id", run_id], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=3600)
    reports = PROJECT_ROOT / "reports" / run_id
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    assert f"report  : {reports / 'index.html'}" in done.stderr

    results = allure_results(reports)
    boot_tests = {name: r for name, r in results.items() if name.startswith("test_")}
    assert len(boot_tests) >= 12  # six boot scenarios on each of the two hosts
    assert {r["status"] for r in boot_tests.values()} == {"passed"}
    version_test = results["test_expected_xen_version_booted[vlab1]"]
    labels = {label["name"]: label["value"] for label in version_test["labels"]}
    assert labels["xen_version"] == "4.17.7" and labels["lab_host"] == "vlab1"
    # The first test on a host carries the boot: install transcript, com1, timeline.
    assert "Xen version 4.17.7" in attachment(reports, version_test, "vlab1 com1")
    assert "apt-get install" in attachment(reports, version_test, "vlab1 commands")
    assert "ssh" in attachment(reports, version_test, "vlab1 boot timeline")

    suites = ElementTree.parse(reports / "junit.xml").getroot()
    suite = suites if suites.tag == "testsuite" else suites[0]
    assert int(suite.get("failures", "1")) == 0 and int(suite.get("errors", "1")) == 0
    assert int(suite.get("tests", "0")) == len(boot_tests)
    assert "passed" in (reports / "index.html").read_text()

    # Nothing of com1 lost: the harness's capture equals QEMU's own log, byte for byte.
    for host in ("vlab1", "vlab2"):
        ours = (reports / "com1" / f"{host}.raw").read_bytes()
        assert b"Xen version 4.17.7" in ours
        assert ours == qemu_com1_log(vlab_stopped, host).read_bytes()


def test_build_switching_then_crash_and_recovery_on_one_host(vlab: Lab) -> None:
    """One session on vlab1 (one session saves a boot): install and boot 4.17.5, then
    4.17.7; then crash dom0 under a waiting test, and get the host back; then a guest
    that silently rebooted before a save/restore must fail the continuity check."""
    reports = PROJECT_ROOT / "reports" / "e2e-switch-crash"
    done = run_scenarios([SCENARIOS / "switch_builds.py", SCENARIOS / "crash_injection.py",
                          SCENARIOS / "migration_silent_reboot.py"],
                         reports, "--hosts", "vlab1")
    assert done.returncode == 1, done.stdout[-6000:]  # the crash and the reboot tests fail
    results = allure_results(reports)
    assert results["test_install_and_boot[vlab1-4.17.5]"]["status"] == "passed"
    assert results["test_install_and_boot[vlab1-4.17.7]"]["status"] == "passed"

    crashed = results["test_dom0_crash_fails_the_waiting_test[vlab1]"]
    assert crashed["status"] == "failed"  # a product failure, not lab breakage
    call_seconds = (crashed["stop"] - crashed["start"]) / 1000
    assert call_seconds < 60, f"the crash took {call_seconds:.0f} s to fail the test"
    message = crashed["statusDetails"]["message"]
    assert "ConsoleCrash" in message and "Kernel panic - not syncing" in message, message
    com1 = attachment(reports, crashed, "vlab1 com1")
    assert "sysrq triggered crash" in com1
    assert "Hardware Dom0 crashed" in com1
    recovered = results["test_host_recovered_after_the_crash[vlab1]"]
    assert recovered["status"] == "passed", recovered.get("statusDetails")
    assert "xen" in attachment(reports, recovered, "vlab1 boot timeline")
    assert_silent_reboot_caught(reports, results["test_silently_rebooted_guest_is_caught[vlab1]"])


def assert_silent_reboot_caught(reports: Path, result: dict) -> None:
    """Save and restore went through (their figures are there), and the continuity check
    failed the test as a product failure, saying what started over."""
    assert result["status"] == "failed", result.get("statusDetails")
    message = result["statusDetails"]["message"]
    assert "GuestRebooted" in message and "restarted during save/restore" in message, message
    assert "boot id changed" in message, message
    assert '"seconds"' in attachment(reports, result, "figures: restore")


def broken_lab_file(tmp_path: Path, resource: str, port: int) -> Path:
    """labs/vlab.yaml as a plain lab (no `vlab` section: nothing starts or stops the
    lab) whose vlab1 has `resource` on a port where nothing answers."""
    data = yaml.safe_load(DEFAULT_LAB.read_text())
    data["targets"]["vlab1"]["resources"][resource]["port"] = port
    data["xenhil"]["reports"] = str(tmp_path / "reports")
    data["xenhil"]["timeouts"] = {"firmware": 5}  # x3 on this lab: 15 s
    del data["xenhil"]["vlab"]
    lab_file = tmp_path / f"dead-{resource}.yaml"
    lab_file.write_text(yaml.safe_dump(data))
    return lab_file


def test_dead_bmc_is_lab_breakage_before_anything_runs(vlab: Lab, tmp_path: Path) -> None:
    lab_file = broken_lab_file(tmp_path, "IPMIPowerPort", 6299)
    done = subprocess.run([*XENHIL, "--lab", str(lab_file), "run", "--hosts", "vlab1"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr
    assert "lab not usable, nothing was run" in done.stderr
    assert "host vlab1: BMC 127.0.1.1:6299" in done.stderr
    assert not (tmp_path / "reports").exists()


def test_unreachable_console_is_lab_breakage(vlab: Lab, tmp_path: Path) -> None:
    lab_file = broken_lab_file(tmp_path, "Com1Port", 6298)
    done = subprocess.run(
        [*XENHIL, "--lab", str(lab_file), "run", "--profile", "boot", "--hosts", "vlab1",
         "--run-id", "dead-console", "--", "-k", "version"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    reports = tmp_path / "reports" / "dead-console"
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-4000:]
    result = allure_results(reports)["test_expected_xen_version_booted[vlab1]"]
    assert result["status"] == "broken", result["status"]
    assert "boot stage 'firmware' not reached" in result["statusDetails"]["message"]
