"""`xenhil run`: a profile of scenarios against a lab, with reports.

Before anything touches a host: the lab file is validated, the build is read, every
selected host's BMC must answer. For the virtual lab the images are built (cached) and
the BMCs started, and stopped again at the end unless --keep-up.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import pytest

from .build import load_build
from .errors import ConfigError, InfrastructureError
from .ipmi import BMCError
from .lab import Lab, load_lab
from .paths import cache_dir, data_root, expand
from .plugin import default_run_id
from .report import counts, read_results, write_html, write_junit
from .targets import lab_environment, power_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Profile:
    paths: tuple[str, ...]
    description: str


PROFILES = {
    "default": Profile(("testsuites",), "every scenario the virtual lab can run (make run)"),
    "boot": Profile(("testsuites/boot",), "boot scenarios only: install, boot, verify"),
    "guests": Profile(("testsuites/guests",), "guest scenarios only: PV guest lifecycle"),
    "storage": Profile(("testsuites/storage",), "storage scenarios: NPIV guest disks (FC "
                       "hosts), many-disks hotplug timeout"),
    "supportconfig": Profile(("testsuites/supportconfig",),
                             "support bundles (supportconfig / sos) with guests running"),
    "migration": Profile(("testsuites/migration",),
                         "save/restore, local and live migration (two hosts)"),
}


@dataclass(frozen=True)
class RunOutcome:
    exit_code: int
    reports: Path
    html: Path
    tally: dict[str, int]


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
    owner = control.read_owner() if running else None
    if owner is not None and isinstance(owner.get("pid"), int):
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
    control.write_owner(run_id, keep_up)  # before up: a run killed during it is found too
    control.up(lab, image.disk)
    return not running


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[list[int]]:
    """SIGTERM ends the run like Ctrl-C: the current test is reported interrupted, its
    fixtures clean up (guests destroyed), and the reports are written. A second
    SIGTERM during that cleanup is ignored, so the cleanup finishes. Yields the
    signals received."""
    received: list[int] = []

    def interrupt(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) == 1:
            raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")
        log.warning("%s again: still cleaning up, the run ends when that is done",
                    signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def preflight(lab: Lab, hosts: list[str] | None) -> None:
    """Every selected host's BMC answers; otherwise nothing runs."""
    problems = []
    with lab_environment(lab) as environment:
        for spec in lab.select(hosts):
            try:
                power_of(environment, lab, spec.name, retries=2).get()
            except BMCError as error:
                problems.append(str(error))
    if problems:
        raise InfrastructureError("lab not usable, nothing was run:\n  " + "\n  ".join(problems))


def run(
    lab_path: Path,
    *,
    profile: str = "default",
    build: str | None = None,
    hosts: list[str] | None = None,
    run_id: str | None = None,
    keep_up: bool = False,
    extra_pytest_args: list[str] | None = None,
) -> RunOutcome:
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    run_id = run_id or default_run_id()
    # Key and password files of the virtual lab exist only once it is up.
    unchecked = load_lab(lab_path, check_files=False)
    # Bad names and builds are said before anything starts (the virtual lab included).
    unchecked.select(hosts)
    if build:
        load_build(expand(build))
    is_vlab = "vlab" in unchecked.options
    with _sigterm_interrupts() as signals:
        started_vlab = is_vlab and _start_vlab(unchecked, run_id, keep_up)
        try:
            exit_code, lab, reports = _run_pytest(lab_path, profile, build, hosts, run_id,
                                                  extra_pytest_args)
        finally:
            if is_vlab:
                from .vlab import control

                if started_vlab and not keep_up:
                    control.down(unchecked)
                    control.clear_owner()
                elif not keep_up:
                    control.write_owner(run_id, keep_up=True)  # not ours to stop
        results = read_results(reports / "allure-results")
        html = write_html(reports, f"xen-hil run {run_id} ({profile}, lab {lab.name})",
                          results)
        # pytest's junit.xml leaves out a test it was interrupted in: write it from
        # allure-results then, where that test is reported broken ("interrupted").
        if signals or not (reports / "junit.xml").exists():
            write_junit(reports, results)
    if signals:
        exit_code = 128 + signals[0]
    return RunOutcome(exit_code, reports, html, dict(counts(results)))


def _run_pytest(lab_path: Path, profile: str, build: str | None, hosts: list[str] | None,
                run_id: str, extra_pytest_args: list[str] | None) -> tuple[int, Lab, Path]:
    lab = load_lab(lab_path)
    selected = lab.select(hosts)
    default_build = lab.options.get("default_build")
    if not build and default_build:
        load_build(expand(default_build))  # the virtual lab's exists once it is up
    preflight(lab, hosts)
    reports = lab.reports_dir / run_id
    reports.mkdir(parents=True, exist_ok=True)
    args = [
        *(str(data_root() / path) for path in PROFILES[profile].paths),
        # labgrid's own pytest plugin is not used: our plugin builds the targets.
        "--rootdir", str(data_root()), "-p", "no:cacheprovider", "-p", "no:labgrid",
        "--lab", str(lab_path), "--run-id", run_id,
        # only hosts the user chose: without, the lab's single_host_scenarios_on holds
        *(["--hosts", ",".join(spec.name for spec in selected)] if hosts else []),
        # a rerun with the same run id must not mix in the earlier run's results
        "--alluredir", str(reports / "allure-results"), "--clean-alluredir",
        "--junitxml", str(reports / "junit.xml"),
        "-o", "log_cli=true", "--log-cli-level=INFO", "-v",
        *(["--build", build] if build else []),
        *(extra_pytest_args or []),
    ]
    (reports / "junit.xml").unlink(missing_ok=True)  # an earlier run's, with this id
    log.info("run %s: profile %s on %s; reports in %s", run_id, profile,
             ", ".join(spec.name for spec in selected), reports)
    return int(pytest.main(args)), lab, reports
