"""`xenhil run`: a profile of scenarios against a lab, with reports and a verdict.

Before anything touches a host: the lab file is validated, the build is read, every
selected host's BMC must answer. For the virtual lab the images are built (cached) and
the BMCs started, and stopped again at the end unless --keep-up.

Every test's result goes into the results database as it finishes. At the end the run
is compared with its baseline (harness.results.compare): regressions exit 1, a broken
lab or a run where nothing ran exits 2. With --retest-regressions each regressed test
runs once more at the end, on the same hosts: one that passes then is FLAKY.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from .build import XenBuild, load_build
from .errors import ConfigError, InfrastructureError, SignalInterrupt
from .exported_console import unserved_consoles
from .ipmi import BMCError
from .lab import Lab, load_lab
from .locking import hold_hosts
from .locking.base import DEFAULT_WAIT_MINUTES
from .pages import write_pages
from .paths import cache_dir, data_root, expand, scenario_paths
from .plugin import default_run_id
from .report import counts, read_results, write_junit
from .results import analysis
from .results.compare import exit_code, regressions_to_retest
from .results.db import ResultsDB, data_home, resolve_url
from .results.known import KnownIssue
from .results.recorder import harness_revision, runner_identity
from .results.records import RUN_KINDS, RunRecord
from .results.render import render_text
from .sessions import PYTEST_TROUBLE, Waves, collect, interrupting_signals, plan, run_waves
from .targets import lab_environment, power_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Profile:
    paths: tuple[str, ...]
    description: str


PROFILES = {
    "default": Profile(("testsuites",), "every scenario the virtual lab can run (make run)"),
    "boot": Profile(("testsuites/boot",), "boot scenarios only: install, boot, verify"),
    "guests": Profile(("testsuites/guests",),
                      "guest scenarios only: PV, PVH and HVM guest lifecycle"),
    "storage": Profile(("testsuites/storage",), "storage scenarios: NPIV guest disks (FC "
                       "hosts), many-disks hotplug timeout"),
    "supportconfig": Profile(("testsuites/supportconfig",),
                             "support bundles (supportconfig / sos) with guests running"),
    "migration": Profile(("testsuites/migration",),
                         "save/restore, local and live migration (two hosts; PVH, PV "
                         "where the build can, an HVM guest)"),
    "areas": Profile(("testsuites/boot/test_boot.py::test_expected_xen_version_booted",
                      "testsuites/guests/test_lifecycle.py::test_pv_guest_comes_up",
                      "testsuites/networking/test_bridged.py::test_bridged_guest_talks_to_dom0",
                      "testsuites/networking/test_bridged.py::"
                      "test_bridged_guests_on_two_hosts_talk",
                      "testsuites/migration/test_live_migration.py::"
                      "test_live_migration_round_trip",
                      "testsuites/storage"),
                     "one scenario of each area on both hosts: Xen boots, a PV guest "
                     "comes up, a bridged guest talks to dom0 (on the virtual lab on "
                     "vlab2, beside vlab1's), guests across hosts, live migration, NPIV "
                     "(FC hosts); make test's end-to-end run, whose self-tests take "
                     "support bundles"),
    "smoke": Profile(("testsuites/boot/test_boot.py::test_expected_xen_version_booted",
                      "testsuites/networking/test_bridged.py::test_bridged_guest_talks_to_dom0"),
                     "a quick look at a build: the expected Xen boots, a bridged guest "
                     "talks to dom0"),
}

# The profile a run of named tests (run(tests=...)) is recorded with.
TESTS_PROFILE = "tests"


@dataclass(frozen=True)
class RunOutcome:
    exit_code: int
    reports: Path
    html: Path
    tally: dict[str, int]
    verdict: str
    summary: str  # the comparison with the baseline, as text for the terminal
    database: str  # where the results went, password hidden
    run: RunRecord  # as recorded, with its results


def _start_vlab(lab: Lab, run_id: str, keep_up: bool) -> bool:
    """Build (cached) and start the virtual lab; True if it was not running before.

    A lab left running by a run that was killed (its owner's PID is gone) is stopped
    first, with everything in it: its hosts may still be in the middle of that run's
    work (an apt-get holding the dpkg lock, guests, probes). A lab another live run
    owns is not touched."""
    from .vlab import control
    from .vlab.builds import fetch_builds
    from .vlab.image import build_image

    running = any(control.host_status(host).bmc_running
                  for host in control.virtual_hosts(lab))
    owner = control.read_owner(lab) if running else None
    # A run earlier in this process (xenhil reproduce, bisect) is not another run.
    if owner is not None and isinstance(owner.get("pid"), int) and owner["pid"] != os.getpid():
        if control.pid_alive(owner["pid"]):
            raise InfrastructureError(
                f"the virtual lab is in use by run {owner.get('run_id')} (PID {owner['pid']}): "
                "wait for it to end, or stop it")
        if not owner.get("keep_up"):
            log.warning("the virtual lab was left running by run %s (PID %s), which did "
                        "not end: stopping it and everything in it (that run's finished "
                        "results: `xenhil report %s`)", owner.get("run_id"), owner["pid"],
                        owner.get("run_id"))
            control.down(lab)
            running = False
    image = build_image(cache_dir())
    fetch_builds(cache_dir(), image)
    control.write_owner(lab, run_id, keep_up)  # before up: a run killed during it is found too
    control.up(lab, image.disk)
    return not running


def preflight(lab: Lab, hosts: list[str] | None) -> None:
    """Every selected host's BMC answers, and its console, where an exporter serves it
    for the host's place, is served; otherwise nothing runs."""
    problems = unserved_consoles(spec.console for spec in lab.select(hosts))
    with lab_environment(lab) as environment:
        for spec in lab.select(hosts):
            try:
                power_of(environment, lab, spec.name, retries=2).get()
            except BMCError as error:
                problems.append(str(error))
    if problems:
        raise InfrastructureError("lab not usable, nothing was run:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class Recording:
    """What the run records, and what it is compared with."""

    kind: str = "adhoc"
    database: str | None = None  # URL or path; default: resolve_url's
    baseline: str | None = None  # run id; default: the last passed baseline run
    known_issues: Path | None = None
    retest_regressions: bool = False


def run(
    lab_path: Path,
    *,
    profile: str = "default",
    build: str | None = None,
    hosts: list[str] | None = None,
    run_id: str | None = None,
    keep_up: bool = False,
    extra_pytest_args: list[str] | None = None,
    recording: Recording = Recording(),
    tests: list[str] | None = None,
    wait_minutes: float = DEFAULT_WAIT_MINUTES,
    coordinator: str | None = None,
) -> RunOutcome:
    """Run the profile's scenarios, or only `tests` (test ids relative to the scenarios'
    root, e.g. testsuites/boot/test_boot.py::test_expected_xen_version_booted; the run
    is then recorded with the profile TESTS_PROFILE). The run's hosts are locked for it
    (harness.locking: the lab's coordinator, `coordinator`, or local lock files),
    waiting up to `wait_minutes` for another run to give them back."""
    if tests:
        profile = TESTS_PROFILE
        _check_tests_exist(tests)
    elif profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    if recording.kind not in RUN_KINDS:
        raise ConfigError(f"unknown run kind {recording.kind!r}; known: {', '.join(RUN_KINDS)}")
    run_id = run_id or default_run_id()
    # Key and password files of the virtual lab exist only once it is up.
    unchecked = load_lab(lab_path, check_files=False)
    # Bad names, builds, known issues and baselines are said before anything starts.
    unchecked.select(hosts)
    if build:
        load_build(expand(build))
    known = analysis.known_issues(recording.known_issues)
    lab_database = unchecked.options.get("results_db")
    url = resolve_url(recording.database, expand(lab_database) if lab_database else None,
                      unchecked.reports_dir)
    db = ResultsDB.open(url)
    try:
        if recording.baseline is not None and db.get_run(recording.baseline) is None:
            raise ConfigError(f"--baseline {recording.baseline}: no such run in "
                              f"{db.describe()}; `xenhil runs` lists the runs it has")
        with hold_hosts(unchecked, [spec.name for spec in unchecked.select(hosts)],
                        wait_minutes, coordinator, run_id=run_id):
            return _run_recorded(
                lab_path, unchecked, db, url, known, profile=profile, build=build,
                hosts=hosts, run_id=run_id, keep_up=keep_up,
                paths=scenario_paths(tests) if tests else _profile_paths(profile),
                extra_pytest_args=extra_pytest_args or [], recording=recording)
    finally:
        db.close()


def _run_recorded(lab_path: Path, unchecked: Lab, db: ResultsDB, url: str,
                  known: list[KnownIssue], *, profile: str, build: str | None,
                  hosts: list[str] | None, run_id: str, keep_up: bool, paths: list[str],
                  extra_pytest_args: list[str], recording: Recording) -> RunOutcome:
    is_vlab = "vlab" in unchecked.options
    pytest_code = int(pytest.ExitCode.NO_TESTS_COLLECTED)
    with interrupting_signals() as signals:
        started_vlab = is_vlab and _start_vlab(unchecked, run_id, keep_up)
        try:
            lab, xen_build = _prepare(lab_path, build, hosts)
            reports = lab.reports_dir / run_id
            label, packages, build_hash = analysis.build_fields(xen_build)
            db.start_run(RunRecord(
                id=run_id, profile=profile, lab=lab.name, kind=recording.kind,
                build_label=label, build_packages=packages, build_hash=build_hash,
                started=datetime.now(UTC), runner=runner_identity(),
                revision=harness_revision()))
            try:
                preflight(lab, hosts)
            except InfrastructureError:  # recorded: a nightly that could not run shows
                db.end_run(run_id, datetime.now(UTC), "broken")
                raise
            args = [*_pytest_args(lab_path, lab, hosts, run_id, build, url),
                    *extra_pytest_args]
            waves = _waves(lab_path, lab, build, paths, extra_pytest_args) \
                if hosts is None and profile != TESTS_PROFILE else None
            if signals:  # during that collection, which pytest ends quietly
                raise SignalInterrupt(signals[0])
            log.info("run %s: profile %s on %s; reports in %s; results in %s", run_id,
                     profile, ", ".join(spec.name for spec in lab.select(hosts)), reports,
                     db.describe())
            _fresh_reports(reports)
            if waves is None:
                pytest_code = _pytest([*paths, *args, "--junitxml", str(reports / "junit.xml")])
            else:
                pytest_code = run_waves(waves, lab, reports, args, _pytest, signals,
                                        lambda: _hosts_recorded(db, run_id))
            verdict = analysis.analyse(db, run_id, baseline_id=recording.baseline,
                                       known=known)
            retest = regressions_to_retest(verdict.comparison)
            if recording.retest_regressions and retest and not signals:
                log.info("retesting %d regressed test(s) once: %s", len(retest),
                         ", ".join(retest))
                # The hosts still run the build: no second install and boot. A test of
                # a host beside (waves) exists only where that host is selected.
                _pytest([*scenario_paths(retest), *args, "--attempt", "2", "--reuse-booted",
                         *(["--hosts", ",".join(lab.hosts)] if waves else [])])
                verdict = analysis.analyse(db, run_id, baseline_id=recording.baseline,
                                           known=known)
        finally:
            if is_vlab:
                from .vlab import control

                if started_vlab and not keep_up:
                    control.down(unchecked)
                    control.clear_owner(unchecked)
                elif not keep_up:
                    control.write_owner(unchecked, run_id, keep_up=True)  # not ours to stop
        comparison = verdict.comparison
        final = "interrupted" if signals else comparison.verdict
        ended = datetime.now(UTC)
        db.end_run(run_id, ended, final)
        # The run as the database now has it, for the page's header.
        verdict = dataclasses.replace(
            verdict, run=dataclasses.replace(verdict.run, ended=ended, verdict=final))
        results = read_results(reports / "allure-results")
        html = write_pages(reports, f"xen-hil run {run_id} ({profile}, lab {lab.name})",
                           results, analysis=verdict, history=allure_history(lab),
                           trend_runs=analysis.earlier_runs(db, verdict.run))
        # pytest's junit.xml leaves out a test it was interrupted in: write it from
        # allure-results then, where that test is reported broken ("interrupted").
        if signals or not (reports / "junit.xml").exists():
            write_junit(reports, results)
    if signals:
        code = 128 + signals[0]
    elif pytest_code in PYTEST_TROUBLE:
        code = 2
    else:
        code = exit_code(comparison.verdict)
    return RunOutcome(code, reports, html, dict(counts(results)), final,
                      render_text(comparison), db.describe(), verdict.run)


def allure_history(lab: Lab) -> Path:
    """The lab's Allure history (one line per run), beside its results database."""
    return data_home(lab.reports_dir) / f"allure-history-{lab.name}.jsonl"


def _profile_paths(profile: str) -> list[str]:
    return scenario_paths(PROFILES[profile].paths)


def _check_tests_exist(tests: Sequence[str]) -> None:
    for test in tests:
        path = data_root() / test.split("::")[0]
        if not path.exists():
            raise ConfigError(f"test {test!r}: no file {path} (test ids are relative to "
                              f"{data_root()}, e.g. testsuites/boot/test_boot.py)")


def _prepare(lab_path: Path, build: str | None,
             hosts: list[str] | None) -> tuple[Lab, XenBuild]:
    """The lab file with its files checked (the virtual lab's exist once it is up) and
    the build."""
    lab = load_lab(lab_path)
    lab.select(hosts)
    source = build or lab.options.get("default_build")
    if not source:
        raise ConfigError("no build given: pass --build DIR (a directory of .deb or .rpm "
                          f"files) or set xenhil.default_build in {lab.path}")
    return lab, load_build(expand(str(source)))


def _pytest_args(lab_path: Path, lab: Lab, hosts: list[str] | None, run_id: str,
                 build: str | None, database: str) -> list[str]:
    reports = lab.reports_dir / run_id
    return [
        *_session_args(lab_path, build), "--run-id", run_id,
        # only hosts the user chose: without, the lab's single_host_scenarios_on holds
        *(["--hosts", ",".join(spec.name for spec in lab.select(hosts))] if hosts else []),
        "--alluredir", str(reports / "allure-results"),
        "--results-db", database, "--record-run",
        "-o", "log_cli=true", "--log-cli-level=INFO", "-v",
    ]


def _session_args(lab_path: Path, build: str | None) -> list[str]:
    # labgrid's own pytest plugin is not used: our plugin builds the targets.
    return ["--rootdir", str(data_root()), "-p", "no:cacheprovider", "-p", "no:labgrid",
            "--lab", str(lab_path), *(["--build", build] if build else [])]


def _fresh_reports(reports: Path) -> None:
    """A run starts its reports afresh: a rerun with the same run id must not mix in an
    earlier run's results. The com1 logs are appended to, so that a later session of
    the run (waves, a retest) continues them."""
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "junit.xml").unlink(missing_ok=True)
    for earlier in ("allure-results", "com1", "sessions", "support"):
        shutil.rmtree(reports / earlier, ignore_errors=True)


def _pytest(args: list[str]) -> int:
    return int(pytest.main(args))


def _waves(lab_path: Path, lab: Lab, build: str | None, paths: list[str],
           extra_pytest_args: list[str]) -> Waves | None:
    """The run's sessions when the lab runs one-host scenarios side by side."""
    if not lab.single_host_scenarios_beside:
        return None
    tests = collect([*paths, *_session_args(lab_path, build), *extra_pytest_args])
    return plan(lab, tests) if tests is not None else None


def _hosts_recorded(db: ResultsDB, run_id: str) -> list[str]:
    """The hosts booted into the build so far in the run (each recorded then)."""
    run = db.get_run(run_id)
    return [host.name for host in run.hosts] if run is not None else []
