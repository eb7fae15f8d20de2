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
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from harness.build import load_build
from harness.lab import Lab, default_lab
from harness.paths import PROJECT_ROOT, cache_dir, expand
from harness.results.db import ResultsDB, resolve_url
from harness.vlab.control import bmc_password_file
from harness.vlab.installed import KeptDisks, forget_kept_disks

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
         "--rootdir", str(PROJECT_ROOT), "--lab", str(default_lab()), "--run-id", reports.name,
         "--alluredir", str(reports / "allure-results"), "--clean-alluredir",
         "-o", "log_cli=true",
         "--log-cli-level=INFO", *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=3600)


# What the virtual lab cannot run, and says so: each skip's reason must contain one.
VLAB_SKIP_REASONS = (
    "no FC HBA: /sys/class/fc_host does not exist",  # NPIV: no Fibre Channel here
    "does not read /libxl/suse/per-device-LIBXL_HOTPLUG_TIMEOUT",  # not a SUSE build
    "(SUSE libxc-sr patches absent)",  # SUSE's migration knobs
)


def test_run_of_every_area(vlab_stopped: Lab) -> None:
    """What `make run` does, with one scenario of every area (profile `areas`; `make run`
    runs them all): build, start the lab, install 4.17.7 on both hosts (or boot them
    from its kept disk), run the scenarios, write the reports, stop the lab."""
    run_id = "e2e-areas"
    # In make test, test_results.py ran first and kept vlab1's disk with 4.17.7.
    disks = KeptDisks.for_lab(vlab_stopped)
    assert disks is not None
    build = load_build(expand(str(vlab_stopped.options["default_build"])))
    kept_before = disks.kept("vlab1", build) is not None
    done = subprocess.run([*XENHIL, "run", "--profile", "areas", "--run-id", run_id],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=3600)
    reports = PROJECT_ROOT / "reports" / run_id
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    assert f"report  : {reports / 'index.html'}" in done.stderr
    assert "verdict : passed (exit 0)" in done.stderr
    # Debian's 4.17.7 has no shadow paging: no PV variants, said before anything boots.
    assert "live migration of PV guests not run: xen-hypervisor-4.17-amd64 " in done.stdout
    # The Allure 3 report and the qualification summary are written beside it.
    assert "googletagmanager" not in (reports / "allure-report" / "index.html").read_text()
    assert "Qualification of xen-hypervisor-4.17-amd64" in (
        reports / "qualification.html").read_text()

    results = allure_results(reports)
    status = {name: result["status"] for name, result in results.items()}
    assert not {name: s for name, s in status.items() if s not in ("passed", "skipped")}
    skipped = {name: results[name]["statusDetails"]["message"]
               for name, s in status.items() if s == "skipped"}
    for name, reason in skipped.items():
        assert any(known in reason for known in VLAB_SKIP_REASONS), (name, reason)
    areas = {label["value"] for result in results.values() if result["status"] == "passed"
             for label in result["labels"] if label["name"] == "area"}
    assert {"boot", "guests", "networking", "migration"} <= areas, areas
    # The clones: one-host scenarios on vlab1, the networking one on vlab2 beside it in
    # a session of its own, then the two-host ones on both.
    assert "test_expected_xen_version_booted[vlab1]" in status
    assert status["test_bridged_guest_talks_to_dom0[vlab2]"] == "passed"
    beside = (reports / "sessions" / "vlab2.log").read_text()
    assert "test_bridged.py::test_bridged_guest_talks_to_dom0[vlab2]" in beside
    assert " 1 passed" in beside, beside[-3000:]
    # Its verdict in the run's own log (rich wraps its lines anywhere).
    assert "vlab2(beside):testsuites/networking/test_bridged.py::test_bridged_guest_talks_" \
           "to_dom0[vlab2]PASSED" in "".join((done.stdout + done.stderr).split())
    assert status["test_bridged_guests_on_two_hosts_talk[vlab1-vlab2]"] == "passed"
    # A PVH guest live-migrated there and back, with its figures.
    migration = results["test_live_migration_round_trip[vlab1-vlab2-pvh]"]
    assert migration["status"] == "passed"
    figures = _attachments_text(reports, migration, "figures")
    assert "migrate vlab1 -> vlab2: downtime" in figures, figures

    version_test = results["test_expected_xen_version_booted[vlab1]"]
    labels = {label["name"]: label["value"] for label in version_test["labels"]}
    assert labels["xen_version"] == "4.17.7" and labels["lab_host"] == "vlab1"
    # The first test carries the boot (com1 from power-on); every test the timeline of
    # the boot it ran on, which names the kept disk when the build was not installed.
    # The two-host tests' session reused the hosts the first sessions booted.
    assert "Xen version 4.17.7" in attachment(
        reports, results["test_expected_xen_version_booted[vlab1]"], "vlab1 com1")
    timelines = {name: attachment(reports, result, "vlab1 boot timeline")
                 for name, result in results.items() if "[vlab2]" not in name}
    booted = {timeline for timeline in timelines.values() if "reused" not in timeline}
    assert len(booted) == 1, booted
    timeline = booted.pop()
    assert "ssh" in timeline and ("disk: kept disk" in timeline) == kept_before, timeline
    assert timelines["test_expected_xen_version_booted[vlab1]"] == timeline
    for name in ("test_bridged_guests_on_two_hosts_talk[vlab1-vlab2]",
                 "test_live_migration_round_trip[vlab1-vlab2-pvh]"):
        assert "not power cycled" in timelines[name], timelines[name]
        assert "not power cycled" in attachment(reports, results[name], "vlab2 boot timeline")
    # Without a kept disk, one test's transcript holds the install; with one, none does.
    installs = [name for name, result in results.items()
                if "apt-get install" in _attachments_text(reports, result, "vlab1 commands")]
    assert len(installs) == (0 if kept_before else 1), installs
    # Measured figures are in the report.
    assert "loss" in attachment(reports, results["test_bridged_guests_on_two_hosts_talk"
                                                 "[vlab1-vlab2]"], "figures")

    suites = ElementTree.parse(reports / "junit.xml").getroot()
    suite = suites if suites.tag == "testsuite" else suites[0]
    assert int(suite.get("failures", "1")) == 0 and int(suite.get("errors", "1")) == 0
    assert int(suite.get("skipped", "-1")) == len(skipped)
    assert "passed" in (reports / "index.html").read_text()

    # Nothing of com1 lost: the harness's capture equals QEMU's own log, byte for byte.
    for host in ("vlab1", "vlab2"):
        ours = (reports / "com1" / f"{host}.raw").read_bytes()
        assert b"Xen version 4.17.7" in ours
        assert ours == qemu_com1_log(vlab_stopped, host).read_bytes()

    assert_no_secrets_in(reports, done.stdout + done.stderr)


def assert_no_secrets_in(reports: Path, output: str) -> None:
    """Neither the BMC password nor the private SSH key is in anything the run wrote
    or printed (reports, logs, transcripts, junit, support bundles)."""
    password = bmc_password_file().read_text().strip()
    key_lines = [line for line in (cache_dir() / "vlab" / "keys" / "id_ed25519").read_text()
                 .splitlines() if "PRIVATE KEY" not in line]
    secrets = [password.encode(), *(line.encode() for line in key_lines if len(line) > 20)]
    assert len(password) >= 8 and secrets
    files = [path for path in reports.rglob("*") if path.is_file()]
    assert len(files) > 100  # allure results, attachments, com1 logs, support bundles
    for path in files:
        data = path.read_bytes()
        leaked = [secret for secret in secrets if secret in data]
        assert not leaked, f"{path} holds a secret"
    assert not [secret for secret in secrets if secret.decode() in output]


def _attachments_text(reports: Path, result: dict, name_part: str) -> str:
    return "".join((reports / "allure-results" / item["source"]).read_text(errors="replace")
                   for item in result.get("attachments", []) if name_part in item["name"])


def test_harness_self_tests_and_faults(vlab: Lab) -> None:
    """One session (one session saves boots; one-host scenarios on vlab1, which boots
    once, into Xen): failures that leave a support bundle, then a guest on a bridge that
    does not exist and a test that leaks a domain and a vif (one burst of failures: one
    bundle); the NPIV code on FC transport sysfs trees made on the host, read and
    written through SSH; then the faults of scenarios/faults.py: dom0 crashed during
    guest creation, the machine frozen under a guest command, vlab2's BMC killed. (The
    bundle of a host without Xen is test_interrupts.py's run after a SIGKILL.)"""
    reports = PROJECT_ROOT / "reports" / "e2e-self-tests"
    done = run_scenarios([SCENARIOS / "support_on_failure.py", SCENARIOS / "guest_selftests.py",
                          SCENARIOS / "npiv_sysfs.py", SCENARIOS / "faults.py"], reports)
    results = allure_results(reports)
    expected = {"test_deliberate_failure_leaves_a_support_bundle[vlab1]": "failed",
                "test_second_failure_of_the_burst_links_the_same_bundle[vlab1]": "failed",
                "test_vif_on_a_missing_bridge_fails_with_the_hotplug_error[vlab1]": "failed",
                "test_leaked_domain_and_vif_fail_the_test[vlab1]": "failed",
                "test_dom0_crash_during_guest_creation[vlab1]": "failed",
                "test_frozen_host_fails_the_test_as_hung[vlab1]": "failed",
                "test_dead_bmc_makes_its_host_broken": "broken",
                "test_broken_host_ends_its_next_test_at_once": "broken"}
    outcome = {name: result["status"] for name, result in results.items()}
    assert {name: status for name, status in outcome.items() if status != "passed"} \
        == expected, outcome
    assert done.returncode == 1, done.stdout[-6000:]

    assert_faults_end_their_tests(vlab, reports, results)

    # A vif on a missing bridge: failed, with the hotplug script's error and logs.
    bridge = results["test_vif_on_a_missing_bridge_fails_with_the_hotplug_error[vlab1]"]
    assert bridge["status"] == "failed"
    message = bridge["statusDetails"]["message"]
    assert "xenbr-missing" in message and "/var/log/xen/" in message, message
    diagnosis = attachment(reports, bridge, "vlab1 guests and network")
    assert "### hotplug logs" in diagnosis and "xenbr-missing" in diagnosis
    assert "earlier failure of this burst" in attachment(reports, bridge,
                                                          "vlab1 support bundle")
    assert_support_bundle_on_failure(reports)

    # The leak check names the leaked domain and vif; they were left for inspection.
    leaked = results["test_leaked_domain_and_vif_fail_the_test[vlab1]"]
    assert leaked["status"] == "failed"
    message = leaked["statusDetails"]["message"]
    assert "Leaked" in message, message
    assert "domains: xenhil-leaked" in message and "network devices: vif999.9" in message
    assert outcome["test_clean_up_the_leaks[vlab1]"] == "passed"

    # NPIV: eight scenarios on sysfs trees; the kernel's vport_create format (16 hex
    # digits each, no 0x) written over SSH.
    npiv = [name for name in results if "npiv" in results[name].get("fullName", "")]
    assert len(npiv) == 8, sorted(npiv)
    created = results["test_create_and_delete_write_what_the_kernel_documents[vlab1]"]
    commands = attachment(reports, created, "vlab1 commands")
    assert ("echo c0507611a2b3c402:c0507601a2b3c402 > /tmp/xenhil-npiv/test_create_and_"
            "delete_write_what_the_kernel_documents/sys/class/fc_host/host5/vport_create"
            ) in commands


@pytest.mark.long
def test_build_switching_and_a_silently_rebooted_guest(vlab: Lab) -> None:
    """One session: install and boot 4.17.5, then 4.17.7 (disks kept by earlier runs
    are forgotten first: both are installed); then a guest that silently rebooted
    across save/restore."""
    forget_kept_disks()
    reports = PROJECT_ROOT / "reports" / "e2e-switch-builds"
    done = run_scenarios([SCENARIOS / "switch_builds.py",
                          SCENARIOS / "migration_silent_reboot.py"], reports)
    results = allure_results(reports)
    outcome = {name: result["status"] for name, result in results.items()}
    assert outcome["test_install_and_boot[vlab1-4.17.5]"] == "passed", outcome
    assert outcome["test_install_and_boot[vlab1-4.17.7]"] == "passed", outcome
    for build in ("4.17.5", "4.17.7"):
        commands = attachment(reports, results[f"test_install_and_boot[vlab1-{build}]"],
                              "vlab1 commands")
        assert "apt-get install" in commands, build
    # A guest that rebooted across save/restore fails the continuity check.
    assert_silent_reboot_caught(reports,
                                results["test_silently_rebooted_guest_is_caught[vlab1]"])
    assert done.returncode == 1, done.stdout[-6000:]


def com1_time(com1: str, text: str) -> float:
    """When the first line containing `text` arrived, from the com1 log's timestamps."""
    line = next(line for line in com1.splitlines() if text in line)
    stamp = line.split(" ", 1)[0]
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def injected_at(reports: Path, result: dict) -> float:
    return float(attachment(reports, result, "fault injected").split()[0])


def assert_faults_end_their_tests(lab: Lab, reports: Path, results: dict[str, dict]) -> None:
    """Each fault ends its test promptly with the fault as the verdict and message; the
    host is recovered (or, without its BMC, broken for the rest of the run) and the
    run goes on. The detection latencies are written to fault-latencies.json."""
    latencies = {}
    crashed = results["test_dom0_crash_during_guest_creation[vlab1]"]
    message = crashed["statusDetails"]["message"]
    assert "ConsoleCrash" in message and "Kernel panic - not syncing" in message, message
    panic = com1_time(attachment(reports, crashed, "vlab1 com1"), "Kernel panic - not syncing")
    latencies["dom0 panic line on com1 -> test failed"] = crashed["stop"] / 1000 - panic
    assert results["test_host_recovered_after_the_crash[vlab1]"]["status"] == "passed"

    hung = results["test_frozen_host_fails_the_test_as_hung[vlab1]"]
    message = hung["statusDetails"]["message"]
    assert "HostHung" in message and "host hung" in message, message
    latencies["machine frozen -> test failed as hung"] = \
        hung["stop"] / 1000 - injected_at(reports, hung)
    assert results["test_host_recovered_after_the_hang[vlab1]"]["status"] == "passed"

    dead = results["test_dead_bmc_makes_its_host_broken"]
    message = dead["statusDetails"]["message"]
    bmc = f"BMC {lab.host('vlab2').bmc.address}:{lab.host('vlab2').bmc.port}"
    assert "HostBroken" in message and bmc in message, message
    latencies["BMC killed -> test broken"] = dead["stop"] / 1000 - injected_at(reports, dead)
    after = results["test_broken_host_ends_its_next_test_at_once"]
    assert bmc in after["statusDetails"]["message"]
    latencies["next test on the broken host -> broken"] = (after["stop"] - after["start"]) / 1000
    assert results["test_the_other_host_goes_on[vlab1]"]["status"] == "passed"

    (reports / "fault-latencies.json").write_text(json.dumps(latencies, indent=1))
    hang_timeout = 60  # labs/vlab.yaml: host_hang 20 s x timeout_factor 3
    assert latencies["dom0 panic line on com1 -> test failed"] < 5, latencies
    # the hang timeout, plus at most one probe interval and one probe of 10 s
    assert latencies["machine frozen -> test failed as hung"] < hang_timeout + 20, latencies
    # one BMC poll interval and the BMC's three failing ipmitool attempts
    assert latencies["BMC killed -> test broken"] < 60, latencies
    assert latencies["next test on the broken host -> broken"] < 5, latencies


def assert_silent_reboot_caught(reports: Path, result: dict) -> None:
    """Save and restore went through (their figures are there), and the continuity check
    failed the test as a product failure, saying what started over."""
    assert result["status"] == "failed", result.get("statusDetails")
    message = result["statusDetails"]["message"]
    assert "GuestRebooted" in message and "restarted during save/restore" in message, message
    assert "boot id changed" in message, message
    assert '"seconds"' in attachment(reports, result, "figures: restore")


def assert_support_bundle_on_failure(reports: Path, host: str = "vlab1") -> None:
    """The deliberate failures of scenarios/support_on_failure.py: the first links a
    checked, unpacked, indexed bundle of the host; the second (same burst) the same
    one. The crashed host of faults.py got none, and the report says why."""
    results = allure_results(reports)
    crashed = results[f"test_dom0_crash_during_guest_creation[{host}]"]
    assert "host crashed" in attachment(reports, crashed, f"{host} support bundle (none)")
    first = results[f"test_deliberate_failure_leaves_a_support_bundle[{host}]"]
    assert first["status"] == "failed"
    assert "deliberate failure" in first["statusDetails"]["message"]
    bundle_text = attachment(reports, first, f"{host} support bundle")
    assert "[xen]" in bundle_text and "[sos/grub2]" in bundle_text, bundle_text
    links = [link["url"] for link in first.get("links", [])
             if link["url"].startswith((reports / "support" / host).as_uri())]
    assert len(links) == 1, first.get("links")
    bundle = Path(links[0].removeprefix("file://"))
    assert (bundle / "index.txt").read_text() == bundle_text
    assert list(bundle.glob("**/xl-info.txt")) and list(bundle.glob("sosreport-*"))
    second = results[f"test_second_failure_of_the_burst_links_the_same_bundle[{host}]"]
    assert second["status"] == "failed"
    assert "earlier failure of this burst" in attachment(reports, second,
                                                          f"{host} support bundle")
    assert links[0] in [link["url"] for link in second.get("links", [])]


def broken_lab_file(tmp_path: Path, resource: str, port: int) -> Path:
    """The tests' lab file as a plain lab (no `vlab` section: nothing starts or stops the
    lab) whose vlab1 has `resource` on a port where nothing answers."""
    data = yaml.safe_load(default_lab().read_text())
    data["targets"]["vlab1"]["resources"][resource]["port"] = port
    data["xenhil"]["reports"] = str(tmp_path / "reports")
    data["xenhil"]["timeouts"] = {"firmware": 5}  # x3 on this lab: 15 s
    del data["xenhil"]["vlab"]
    lab_file = tmp_path / f"dead-{resource}.yaml"
    lab_file.write_text(yaml.safe_dump(data, sort_keys=False))  # labgrid: drivers in order
    return lab_file


def test_dead_bmc_is_lab_breakage_before_anything_runs(vlab: Lab, tmp_path: Path) -> None:
    lab_file = broken_lab_file(tmp_path, "IPMIPowerPort", 6299)
    done = subprocess.run([*XENHIL, "--lab", str(lab_file), "run", "--hosts", "vlab1",
                           "--run-id", "dead-bmc", "--kind", "nightly"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr
    assert "lab not usable, nothing was run" in done.stderr
    assert f"host vlab1: BMC {vlab.host('vlab1').bmc.address}:6299" in done.stderr
    assert not (tmp_path / "reports" / "dead-bmc").exists()  # nothing ran
    # The night's run is in the results database, as broken: its history shows it.
    db = ResultsDB.open(resolve_url(None, None, tmp_path / "reports"))
    try:
        recorded = db.get_run("dead-bmc")
    finally:
        db.close()
    assert recorded is not None and recorded.verdict == "broken" and not recorded.results


def test_unreachable_console_is_lab_breakage(vlab: Lab, tmp_path: Path) -> None:
    lab_file = broken_lab_file(tmp_path, "Com1Port", 6298)
    done = subprocess.run(
        [*XENHIL, "--lab", str(lab_file), "run", "--profile", "boot", "--hosts", "vlab1",
         "--run-id", "dead-console", "--", "-k", "version"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    reports = tmp_path / "reports" / "dead-console"
    # The lab broke and nothing else decided the run: exit 2, not a product failure.
    assert done.returncode == 2, done.stdout[-4000:] + done.stderr[-4000:]
    assert "verdict : broken (exit 2)" in done.stderr
    result = allure_results(reports)["test_expected_xen_version_booted[vlab1]"]
    assert result["status"] == "broken", result["status"]
    assert "boot stage 'firmware' not reached" in result["statusDetails"]["message"]
