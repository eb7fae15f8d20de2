"""Results that remember, end to end on the virtual lab: `xenhil run`s of the smoke
profile sharing one results database, as a nightly lab runs them.

make test (the memory across runs):
1. 4.17.7: passes, and becomes the baseline (kind nightly).
2. The same profile on 4.17.7 with a broken vif-bridge (`xenhil vlab build` makes it):
   the bridged guest test is a REGRESSION and the run exits 1. A test made to fail on
   its first try only is retested at the end (--retest-regressions) and is FLAKY. The
   retest of the bridged test fails again and links the support bundle of the run's
   failures just before it.
Then `xenhil compare` names the regression of run 2, and `xenhil runs` and
`xenhil history` show both runs.

make bench (`long`: the known-issue run and bug hunting, each a support bundle more):
after the same baseline, the defective build with a known-issues entry for the bridged
test: KNOWN, the run exits 0 and its page shows the bug link. Then, on the host that run
left booted, `xenhil reproduce` of a passing test 2 times gives 0/2 failed; of the
bridged test `--until fail`, stops after its first attempt.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.lab import Lab
from harness.paths import PROJECT_ROOT, cache_dir
from harness.vlab import control
from harness.vlab.installed import forget_kept_disks

from .test_run import XENHIL, attachment

SMOKE = ["run", "--profile", "smoke", "--hosts", "vlab1", "--kind", "nightly", "--keep-up"]
FAIL_ONCE = str(Path(__file__).parent / "scenarios" / "fail_once.py")
BRIDGED = "testsuites/networking/test_bridged.py::test_bridged_guest_talks_to_dom0[vlab1]"
BOOT = "testsuites/boot/test_boot.py::test_expected_xen_version_booted"
FLAKY = "tests/e2e/scenarios/fail_once.py::test_fails_on_its_first_try_only"
BUG = "https://bugs.example.org/show_bug.cgi?id=4242"
BROKEN_BUILD = str(cache_dir() / "vlab" / "builds" / "xen-4.17.7-vifbroken")
REPORTS = PROJECT_ROOT / "reports"


@pytest.fixture
def results_env(vlab_stopped: Lab, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A results database of this test's own, no kept disk (the first run installs),
    and the virtual lab stopped at the end (the runs keep it up between them, and
    reproduce uses the host the last run left booted)."""
    forget_kept_disks()
    env = {**os.environ, "XENHIL_DATA": str(tmp_path), "COLUMNS": "250",
           "XENHIL_E2E_FAIL_ONCE": str(tmp_path / "fail-once")}
    try:
        yield env
    finally:
        control.down(vlab_stopped)
        control.clear_owner(vlab_stopped)


def xenhil(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*XENHIL, *args], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=1800)


def output(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout[-6000:] + done.stderr[-6000:]


def test_regression_and_flaky_against_the_baseline(results_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    passed_baseline(results_env)

    (tmp_path / "fail-once").touch()
    regressed = xenhil(results_env, *SMOKE, "--run-id", "e2e-results-regressed",
                       "--build", BROKEN_BUILD, "--retest-regressions", "--", FAIL_ONCE)
    assert regressed.returncode == 1, output(regressed)
    assert not (tmp_path / "fail-once").exists()  # its first try did fail
    page = (REPORTS / "e2e-results-regressed" / "index.html").read_text()
    assert "REGRESSION" in page and "FLAKY" in page and "e2e-results-baseline" in page
    assert "+xenhil.vifbroken1" in page  # the package that changed since the baseline
    regressed_dir = REPORTS / "e2e-results-regressed"
    results = _all_results(regressed_dir)
    statuses = sorted((r["name"], r["status"]) for r in results)
    # First tries and retests: the bridged test failed twice, the flaky one once.
    assert statuses.count(("test_bridged_guest_talks_to_dom0[vlab1]", "failed")) == 2
    assert ("test_fails_on_its_first_try_only", "passed") in statuses
    bridged = [r for r in results if r["name"] == "test_bridged_guest_talks_to_dom0[vlab1]"]
    first_try = next(r for r in bridged if {"name": "attempt", "value": "2"} not in r["labels"])
    message = first_try["statusDetails"]["message"]
    assert "vif-bridge" in message, message
    # The retest followed the failed tests at once: it links their burst's bundle.
    bundles = [path for path in (regressed_dir / "support" / "vlab1").iterdir()
               if path.is_dir()]
    assert len(bundles) == 1, bundles
    retest = next(r for r in bridged if {"name": "attempt", "value": "2"} in r["labels"])
    assert "earlier failure of this burst" in attachment(regressed_dir, retest,
                                                         "vlab1 support bundle")

    compared = xenhil(results_env, "compare", "e2e-results-regressed")
    assert compared.returncode == 1, output(compared)
    regression_lines = [line for line in compared.stdout.splitlines() if BRIDGED in line]
    assert regression_lines and "REGRESSION" in regression_lines[0], compared.stdout
    assert any("FLAKY" in line for line in compared.stdout.splitlines() if FLAKY in line)

    assert_runs_listed(results_env, {"e2e-results-baseline": "passed",
                                     "e2e-results-regressed": "regressed"})
    history = xenhil(results_env, "history", BRIDGED)
    assert history.returncode == 0, output(history)
    rows = (history.stdout + history.stderr).splitlines()
    # The regressed run has the bridged test twice: its first try and its retest.
    for run_id, tries in (("e2e-results-baseline", 1), ("e2e-results-regressed", 2)):
        assert sum(run_id in row for row in rows) == tries, "\n".join(rows)


@pytest.mark.long
def test_known_issue_then_reproduce_on_the_defective_build(results_env: dict[str, str],
                                                           tmp_path: Path) -> None:
    passed_baseline(results_env)

    known = tmp_path / "known-issues.yaml"
    known.write_text(f"""\
known_issues:
  - test: "{BRIDGED.split('[')[0]}*"
    message: vif-bridge
    bug: "{BUG}"
    reason: the vifbroken build ships a vif-bridge that always fails (deliberately)
""")
    known_run = xenhil(results_env, *SMOKE, "--run-id", "e2e-results-known",
                       "--build", BROKEN_BUILD, "--known-issues", str(known))
    assert known_run.returncode == 0, output(known_run)
    page = (REPORTS / "e2e-results-known" / "index.html").read_text()
    assert "KNOWN" in page and BUG in page and "e2e-results-baseline" in page
    assert_runs_listed(results_env, {"e2e-results-known": "passed"})

    passing = xenhil(results_env, "reproduce", BOOT, "--host", "vlab1", "--build",
                     BROKEN_BUILD, "--count", "2")
    assert passing.returncode == 0, output(passing)
    assert "failed  : 0/2 (2 passed, 0 failed, 0 broken, 0 skipped)" in passing.stderr
    failing = xenhil(results_env, "reproduce", BRIDGED, "--host", "vlab1", "--build",
                     BROKEN_BUILD, "--count", "3", "--until", "fail")
    assert failing.returncode == 1, output(failing)
    assert "failed  : 1/1 (0 passed, 1 failed, 0 broken, 0 skipped)" in failing.stderr


def passed_baseline(env: dict[str, str]) -> None:
    """4.17.7 installed, booted and passed: the baseline of the runs after it."""
    baseline = xenhil(env, *SMOKE, "--run-id", "e2e-results-baseline", "--", FAIL_ONCE)
    assert baseline.returncode == 0, output(baseline)
    assert "verdict : passed (exit 0)" in baseline.stderr
    # Installed, booted, verified: vlab1's disk is kept for the next install of 4.17.7.
    everything = baseline.stdout + baseline.stderr
    assert "vlab1: installing xen-hypervisor-4.17-amd64" in everything
    assert "vlab1: kept its disk with xen-hypervisor-4.17-amd64 4.17.7" in everything


def assert_runs_listed(env: dict[str, str], verdicts: dict[str, str]) -> None:
    """`xenhil runs` lists each run with its verdict."""
    runs = xenhil(env, "runs")
    assert runs.returncode == 0, output(runs)
    lines = runs.stdout.splitlines() + runs.stderr.splitlines()
    for run_id, verdict in verdicts.items():
        assert any(run_id in line and verdict in line for line in lines), output(runs)


def _all_results(run_dir: Path) -> list[dict]:
    return [json.loads(path.read_text())
            for path in (run_dir / "allure-results").glob("*-result.json")]
