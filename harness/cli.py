"""`xenhil`: the command line of the harness.

Every command validates the lab file before it touches a host, and says what to fix.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from .errors import ConfigError, HarnessError
from .ipmi import IPMITool, bmc_secrets
from .lab import LAB_VARIABLE, Lab, default_lab, load_lab
from .locking.base import DEFAULT_WAIT_MINUTES
from .paths import cache_dir, expand
from .results.records import RUN_KINDS

if TYPE_CHECKING:
    from .results.db import ResultsDB

# soft_wrap: long paths and error messages stay on one line (copyable, greppable).
console = Console(stderr=True, soft_wrap=True)

EPILOG = """\
examples:
  xenhil run                        default profile on the virtual lab (what `make run` does)
  xenhil run --build DIR --hosts vlab1 -- -k dmesg
  xenhil run --test testsuites/boot/test_boot.py::test_xen_daemons_active --hosts vlab1
  xenhil run --kind nightly --retest-regressions
                                    a nightly run: a baseline for later runs once it passed
  xenhil runs                       recent runs with their verdicts
  xenhil compare RUN_ID             a run against its baseline: regressions, known, flaky
  xenhil history TEST_ID            one test's status and figures over the last runs
  xenhil report RUN_ID              index.html and junit.xml of a run that was killed
  xenhil reproduce TEST --count 10  one test 10 times on the host where it last failed
  xenhil bisect TEST --good DIR --bad DIR --builds DIR
                                    the first bad build of a series
  xenhil lab check --lab labs/my-lab.yaml
  xenhil --lab labs/my-lab.yaml lab trust xen-r640-01
  xenhil lab locks                  who holds which host (a coordinator's places, or local)
  xenhil console vlab1              live com1, read-only
  xenhil vlab build                 build the virtual lab's image and default Xen builds
                                    (and the defective and series builds derived from them)
  xenhil vlab up                    start the virtual lab's BMCs (hosts stay off)
  xenhil power vlab1 on             power a host on through its BMC
  xenhil vlab status                what runs, on which ports, power state
  xenhil vlab down                  stop everything the virtual lab started
  xenhil support vlab1              collect a support bundle (sos / supportconfig) now

The lab file (--lab, else $XENHIL_LAB, else labs/vlab.yaml) says where every host's BMC,
com1 and SSH are. The virtual lab's images and state live in $XENHIL_CACHE (default
~/.cache/xen-hil).
Results go to a database: --db, else $XENHIL_DB, else the lab file's xenhil.results_db,
else results.sqlite in $XENHIL_DATA or the reports directory.

exit codes of `xenhil run`: 0 no regression against the baseline, 1 regressions,
2 the lab was broken or nothing ran (or bad input), 128+N stopped by signal N.
"""


def _lab(args: argparse.Namespace, *, check_files: bool = True) -> Lab:
    return load_lab(args.lab, check_files=check_files)


def cmd_vlab_build(args: argparse.Namespace) -> int:
    from .guests.guest import public_key_line
    from .guests.image import build_guest_image
    from .vlab.builds import fetch_builds
    from .vlab.derived_builds import make_derived_builds
    from .vlab.image import build_image

    image = build_image(cache_dir(), force=args.force)
    builds = fetch_builds(cache_dir(), image, force=args.force)
    # the defective build and the bisection series, for the harness's self-tests
    builds += make_derived_builds(cache_dir(), force=args.force)
    # The same guest image the guest scenarios ask for (root's key is the lab's key).
    guest = build_guest_image(cache_dir(), [public_key_line(image.ssh_key)], force=args.force)
    console.print(f"image: {image.disk}")
    for build in builds:
        console.print(f"build: {build}")
    console.print(f"guest: {guest.directory}")
    return 0


def cmd_vlab_up(args: argparse.Namespace) -> int:
    from .vlab import control
    from .vlab.builds import fetch_builds
    from .vlab.image import build_image

    lab = _lab(args, check_files=False)
    image = build_image(cache_dir())
    fetch_builds(cache_dir(), image)
    control.up(lab, image.disk)
    _print_status(lab)
    return 0


def cmd_vlab_down(args: argparse.Namespace) -> int:
    from .vlab import control

    control.down(_lab(args, check_files=False))
    console.print("virtual lab stopped: no process or port left")
    return 0


def cmd_vlab_status(args: argparse.Namespace) -> int:
    _print_status(_lab(args, check_files=False))
    _print_kept_disks()
    return 0


def cmd_vlab_forget(args: argparse.Namespace) -> int:
    from .vlab.installed import forget_kept_disks, kept_disks

    forgotten = forget_kept_disks()
    left = kept_disks()
    console.print(f"forgot {forgotten} kept disk(s); the next install of those "
                  "builds installs them"
                  + (f"; {len(left)} kept: a host's disk is on them" if left else ""))
    return 0


def _print_kept_disks() -> None:
    from .vlab.installed import installed_dir, kept_disks

    disks = kept_disks()
    if not disks:
        console.print(f"no kept disks in {installed_dir()}: the next install of any build "
                      "installs it")
        return
    table = Table(title=escape(f"disks kept with a build installed ({installed_dir()}); "
                               "`xenhil vlab forget` removes them"))
    for column in ("disk", "build", "from", "kept", "size", "in use by"):
        table.add_column(column, overflow="fold")  # paths and hashes whole, if folded
    for disk in disks:
        table.add_row(disk.path.name, escape(disk.build), escape(disk.source), disk.kept,
                      f"{disk.size / 2**20:.0f} MiB", ", ".join(disk.in_use_by) or "-")
    Console().print(table)


def _print_status(lab: Lab) -> None:
    from .vlab import control

    table = Table(title=escape(f"virtual lab {lab.name} ({lab.path})"))
    for column in ("host", "BMC", "QEMU", "power", "ports"):
        table.add_column(column)
    for host in control.virtual_hosts(lab):
        status = control.host_status(host)
        ports = ", ".join(f"{address}:{port}/{proto}" for address, port, proto in status.ports)
        table.add_row(
            host.name,
            f"PID {status.bmc_pid}" if status.bmc_pid else "stopped",
            f"PID {status.qemu_pid}" if status.qemu_pid else "-",
            status.power,
            ports,
        )
    Console().print(table)


def cmd_power(args: argparse.Namespace) -> int:
    import time

    from .targets import lab_environment, power_of

    lab = _lab(args)
    lab.host(args.host)  # an unknown host is named before anything is touched
    with lab_environment(lab) as environment:
        power = power_of(environment, lab, args.host)
        if args.action == "status":
            print(f"{args.host}: power {'on' if power.get() else 'off'}")
            return 0
        start = time.monotonic()
        {"on": power.on, "off": power.off, "cycle": power.cycle}[args.action]()
    print(f"{args.host}: power {'off' if args.action == 'off' else 'on'} "
          f"({time.monotonic() - start:.1f} s)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .runner import PROFILES, Recording, run

    if args.list_profiles:
        for name, profile in PROFILES.items():
            print(f"{name:<10} {profile.description} ({', '.join(profile.paths)})")
        return 0
    if args.test and args.profile:
        raise ConfigError("give --profile or --test, not both: --test runs only the "
                          "tests it names")
    outcome = run(
        args.lab,
        profile=args.profile or "default",
        tests=args.test,
        build=args.build,
        hosts=args.hosts.split(",") if args.hosts else None,
        run_id=args.run_id,
        keep_up=args.keep_up,
        extra_pytest_args=args.pytest_args,
        recording=Recording(kind=args.kind, database=args.db, baseline=args.baseline,
                            known_issues=args.known_issues,
                            retest_regressions=args.retest_regressions),
        wait_minutes=args.wait,
        coordinator=args.coordinator,
    )
    tally = ", ".join(f"{count} {status}" for status, count in sorted(outcome.tally.items()))
    console.rule("xen-hil run interrupted" if outcome.exit_code > 128
                 else "xen-hil run finished")
    console.print(escape(outcome.summary), highlight=False)
    console.print(f"verdict : {outcome.verdict} (exit {outcome.exit_code})")
    console.print(f"results : {tally or 'no tests ran'}")
    console.print(f"database: {escape(outcome.database)}")
    console.print(f"report  : {outcome.html}")
    console.print(f"com1    : {outcome.reports / 'com1'}")
    console.print(f"junit   : {outcome.reports / 'junit.xml'}")
    return outcome.exit_code


REPRODUCE_EPILOG = """\
examples:
  xenhil reproduce testsuites/networking/test_bridged.py::test_bridged_guest_talks_to_dom0 \\
      --host vlab1 --build ~/.cache/xen-hil/vlab/builds/xen-4.17.7-vifbroken --count 5 \\
      --until fail
                  run the bridged guest test up to 5 times, stop at the first failure

Each attempt is a run of its own (reports/repro-<time>-tryNN/: index.html, com1 logs,
the test's evidence), recorded in the results database as kind repro. Without --host
the test runs on the host where it last failed (from the results database).

exit codes: 0 every attempt passed; 1 the test failed at least once (reproduced);
2 no failure, but an attempt was broken or skipped (or bad input); 128+N stopped by
signal N (Ctrl-C: 130, SIGTERM: 143).
"""


def _bisect_epilog() -> str:
    from .bughunt.bisect import EXIT_CODES, MEANINGS

    codes = "\n".join(f"  {code}  {verdict.value}: {MEANINGS[verdict]}"
                      for verdict, code in EXIT_CODES.items())
    return f"""\
examples:
  xenhil bisect testsuites/networking/test_bridged.py::test_bridged_guest_talks_to_dom0 \\
      --good ~/.cache/xen-hil/vlab/builds/series/xen-4.17.7+xenhil.1 \\
      --bad ~/.cache/xen-hil/vlab/builds/series/xen-4.17.7+xenhil.4 \\
      --builds ~/.cache/xen-hil/vlab/builds/series --confirm 1
                  the first bad build of the virtual lab's series (it is +xenhil.3)

The builds are ordered by the version of their hypervisor package (dpkg's rules);
those between --good and --bad are searched. The rules (osstest's cs-bisection-step,
KernelCI's retries):
  - before the search, the good build must pass and the bad build fail, K times each
    (--confirm, default 2), interleaved: good, bad, good, bad;
  - a step tests one build with --runs-per-step runs: it is bad if any run fails;
  - a broken or skipped run is tried again up to 3 times, then the build is skipped;
  - at the end the last good / first bad pair is confirmed K times each (--confirm,
    default 3), interleaved.
Each run is a run of its own (reports/bisect-<time>-stepNN-runR-tryT/), recorded in the
results database as kind bisect; reports/bisect-<time>/index.html shows every step with
links to its runs' reports and com1 logs, and the evidence of the last failure
(summary.json: the same for scripts). Without --host the test runs on the host where
it last failed (from the results database).

exit codes (one per verdict):
{codes}
  2  bad input
  128+N  stopped by signal N (Ctrl-C: 130, SIGTERM: 143); the page shows the steps so far
"""


def _expanded_path(value: str) -> Path:
    """A path argument with ${NAME} and a leading ~ expanded, as in lab files."""
    return Path(expand(value))


def _hunt_host(args: argparse.Namespace) -> str:
    """--host, else the host of the test's last failure in the results database."""
    from .bughunt.lab_steps import last_failed_host

    lab = _lab(args, check_files=False)
    if args.host:
        lab.select([args.host])  # an unknown host is named before anything runs
        return str(args.host)
    db = _open_db(args)
    try:
        host = last_failed_host(db, args.test, lab)
        where = db.describe()
    finally:
        db.close()
    if host is None:
        raise ConfigError(f"{args.test}: no failure of it on lab {lab.name} in {where}; "
                          "give the host with --host")
    console.print(f"host: {host} (where {escape(args.test)} last failed)", highlight=False)
    return host


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .bughunt.commands import run_reproduce

    if args.count < 1:
        raise ConfigError(f"--count {args.count}: give 1 or more")
    return run_reproduce(args.lab, args.test, host=_hunt_host(args), build=args.build,
                         count=args.count, until=args.until, database=args.db,
                         console=console, fresh_boot=args.fresh_boot)


def cmd_bisect(args: argparse.Namespace) -> int:
    from .bughunt.bisect import Confirm
    from .bughunt.commands import run_bisect
    from .bughunt.series import bisection_series, builds_in

    if args.confirm is not None and args.confirm < 1:
        raise ConfigError(f"--confirm {args.confirm}: give 1 or more")
    if args.runs_per_step < 1:
        raise ConfigError(f"--runs-per-step {args.runs_per_step}: give 1 or more")
    others = args.builds_listed + (builds_in(args.builds) if args.builds else [])
    series = bisection_series(args.good, args.bad, others)
    confirm = Confirm() if args.confirm is None else Confirm(args.confirm, args.confirm)
    return run_bisect(args.lab, args.test, host=_hunt_host(args), series=series,
                      confirm=confirm, runs_per_step=args.runs_per_step,
                      database=args.db, console=console)


def _run_directory(args: argparse.Namespace) -> Path:
    given = Path(args.run)
    if args.reports is None and given.is_dir():
        return given
    reports = args.reports or _lab(args, check_files=False).reports_dir
    if not (reports / given).is_dir():
        raise ConfigError(f"{reports / given}: no such run directory; give a run id under "
                          f"{reports} (ls {reports}) or the path of a run directory")
    return reports / given


def cmd_report(args: argparse.Namespace) -> int:
    """Rebuild index.html (and junit.xml if missing) of a run from its allure-results."""
    from .pages import write_pages
    from .report import counts, junit_older_than_results, read_results, write_junit
    from .results import analysis

    run_dir = _run_directory(args)
    allure_dir = run_dir / "allure-results"
    if not allure_dir.is_dir():
        raise ConfigError(f"{allure_dir}: not found, so {run_dir} is not the directory of "
                          "a `xenhil run`; give reports/<run-id> or its run id")
    results = read_results(allure_dir)
    if not results:
        raise ConfigError(f"{allure_dir}: no test result (the run stopped before its first "
                          "test ended), nothing to report; run the profile again")
    db = _open_db(args, run_dir.parent)
    try:
        recorded = db.has_run(run_dir.name)
        verdict = (analysis.analyse(db, run_dir.name, baseline_id=args.baseline,
                                    known=analysis.known_issues(args.known_issues))
                   if recorded else None)
        trend = analysis.earlier_runs(db, verdict.run) if verdict is not None else []
    finally:
        db.close()
    html = write_pages(run_dir, f"xen-hil run {run_dir.name} (rebuilt)", results,
                       analysis=verdict,
                       history=None, trend_runs=trend)
    console.print(f"report  : {html} (rebuilt from allure-results"
                  + (f" and {escape(db.describe())})" if recorded else
                     f"; run {run_dir.name} is not in {escape(db.describe())})"))
    junit = run_dir / "junit.xml"
    if not junit.exists():
        console.print(f"junit   : {write_junit(run_dir, results)} (from allure-results)")
    elif junit_older_than_results(run_dir):
        console.print(f"junit   : {junit} kept, but it is older than allure-results: from an "
                      "earlier run with this id? Delete it and run `xenhil report` again")
    else:
        console.print(f"junit   : {junit} kept (pytest's, richer than allure-results)")
    tally = ", ".join(f"{count} {status}" for status, count in counts(results).items())
    console.print(f"results : {tally}")
    return 0


def cmd_lab_check(args: argparse.Namespace) -> int:
    """Validate the lab file, then reach every BMC, console and SSH endpoint."""
    from .console_transport import SOLPort
    from .remote import RemoteHost

    lab = _lab(args)
    table = Table(title=escape(f"lab {lab.name} ({lab.path}): file valid"))
    for column in ("host", "BMC", "console", "SSH"):
        table.add_column(column)
    broken = False
    for spec in lab.select(args.hosts.split(",") if args.hosts else None):
        try:
            power = "on" if IPMITool(spec.bmc, retries=1).power_status() else "off"
            bmc = f"[green]answers[/], power {power}"
        except HarnessError as error:
            bmc, power, broken = f"[red]{escape(str(error))}[/]", "unknown", True
        endpoint = spec.console.endpoint
        if isinstance(spec.console, SOLPort):
            # Activating would take Serial-over-LAN from whoever has it: the BMC answered.
            com1 = escape(f"{endpoint}: not activated")
        else:
            try:
                spec.console.connect(timeout=5).close()
                com1 = f"[green]{escape(endpoint)} accepts[/]"
            except OSError as error:
                # A virtual host's console only listens while its machine runs.
                com1 = escape(f"{endpoint}: {error.strerror or error}")
                broken = broken or power == "on"
        try:
            RemoteHost(spec.name, spec.ssh, secrets=bmc_secrets(spec.bmc)).run("true",
                                                                              timeout=15)
            ssh = "[green]login works[/]"
        except HarnessError as error:
            ssh = escape(str(error))
            broken = broken or power == "on"
        table.add_row(escape(spec.name), bmc, com1, ssh)
    Console().print(table)
    return 1 if broken else 0


def cmd_lab_trust(args: argparse.Namespace) -> int:
    """Show the SSH host key a host presents; record it in the lab's known_hosts file
    once confirmed."""
    from .host_keys import (
        describe_key,
        known_hosts_name,
        presented_key,
        record_key,
        trusted_keys,
    )

    lab = _lab(args, check_files=False)  # the login key and BMC password are not needed
    spec = lab.host(args.host)
    endpoint = spec.ssh
    if endpoint.known_hosts_file is None:
        raise ConfigError(f"{lab.path}: host {spec.name} has no ssh_known_hosts to record "
                          "its key in; name one under xenhil.defaults or "
                          f"xenhil.hosts.{spec.name} (e.g. `ssh_known_hosts: known_hosts`)")
    key = presented_key(endpoint.address, endpoint.port, timeout=args.timeout)
    console.print(escape(f"{spec.name} ({endpoint.address}:{endpoint.port}) presents "
                         f"{describe_key(key)}"))
    known = trusted_keys(endpoint).lookup(known_hosts_name(endpoint.address, endpoint.port))
    if known is not None and key in known.values():
        console.print("already trusted: nothing to record")
        return 0
    for old in known.values() if known is not None else ():
        console.print(escape(f"it replaces the key trusted until now: {describe_key(old)}"))
    if not args.yes:
        try:
            answer = console.input(escape(f"trust it and record it in "
                                          f"{endpoint.known_hosts_file}? [y/N] "))
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            console.print("not recorded")
            return 1
    record_key(endpoint.known_hosts_file, endpoint.address, endpoint.port, key)
    console.print(escape(f"recorded in {endpoint.known_hosts_file} as "
                         f"{known_hosts_name(endpoint.address, endpoint.port)}"))
    return 0


def cmd_lab_places(args: argparse.Namespace) -> int:
    """Create the lab's places on its labgrid coordinator and set their tags."""
    from .locking import Coordinator, coordinator_of, sync_places
    from .locking.base import default_owner

    lab = _lab(args, check_files=False)
    address = coordinator_of(lab, args.coordinator)
    if address is None:
        raise ConfigError(f"{lab.path}: no coordinator: set xenhil.coordinator (HOST:PORT of "
                          "labgrid-coordinator) or give --coordinator")
    changes = sync_places(lab.hosts, lab.name, Coordinator(address, default_owner()))
    for change in changes:
        console.print(escape(change))
    console.print(f"places of lab {lab.name} on {address}: "
                  f"{'up to date' if not changes else f'{len(changes)} changes'}")
    return 0


def cmd_lab_release(args: argparse.Namespace) -> int:
    """Free a host's lock that a killed run left, saying whose it was."""
    from .locking import host_locks

    lab = _lab(args, check_files=False)
    host_lock = host_locks(lab, [args.host], coordinator=args.coordinator)[0]
    holder = host_lock.release_left()
    console.print(escape(f"host {args.host}: released the lock of {holder}" if holder else
                         f"host {args.host}: not locked, nothing to release"))
    return 0


def cmd_lab_locks(args: argparse.Namespace) -> int:
    """Who holds which host of the lab."""
    from .locking import host_locks

    lab = _lab(args, check_files=False)
    locks = host_locks(lab, coordinator=args.coordinator)
    table = Table(title=escape(f"locks of lab {lab.name}"))
    for column in ("host", "lock", "held by"):
        table.add_column(column)
    for host_lock in locks:
        holder = host_lock.holder()
        table.add_row(escape(host_lock.host), escape(host_lock.description),
                      escape(str(holder)) if holder else "[green]free[/]")
    Console().print(table)
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    """Show a host's com1 live; keyboard input goes to it only with --write."""
    import select
    import time

    from .com1 import Com1Recorder

    lab = _lab(args)
    spec = lab.host(args.host)
    log_path = Path(args.log) if args.log else \
        lab.reports_dir / "console" / f"{spec.name}-{int(time.time())}.log"
    console.print(f"console of {spec.name} at {spec.console.endpoint} (recorded to {log_path}); "
                  f"{'input goes to the host' if args.write else 'read-only'}; Ctrl-C ends")
    with Com1Recorder(spec.console, log_path, name=spec.name) as com1:
        stream = com1.subscribe()
        while True:
            data = stream.read(timeout=0.2)
            if data:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            if args.write and select.select([sys.stdin], [], [], 0)[0]:
                com1.write(os.read(sys.stdin.fileno(), 1024))


def cmd_support(args: argparse.Namespace) -> int:
    """Collect a support bundle from one host now, into reports/<run-id>/support/<host>/."""
    from .plugin import default_run_id
    from .remote import RemoteHost
    from .support import collect

    lab = _lab(args)
    spec = lab.host(args.host)
    destination = lab.reports_dir / (args.run_id or f"support-{default_run_id()}")
    bundle = collect(RemoteHost(spec.name, spec.ssh, secrets=bmc_secrets(spec.bmc)), spec.family,
                     destination / "support" / spec.name,
                     timeout=lab.timeouts(spec)["support_collect"])
    console.print(bundle.summary())
    console.print(f"index   : {bundle.directory / 'index.txt'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xenhil",
        description="Hardware-in-the-loop tests for Xen builds: power (IPMI), com1, SSH.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--lab", type=Path, default=default_lab(),
                        help=f"lab file (default: ${LAB_VARIABLE} if set, else "
                             "labs/vlab.yaml; here: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    vlab = commands.add_parser("vlab", help="the virtual lab: QEMU hosts behind ipmi_sim BMCs")
    vlab_commands = vlab.add_subparsers(dest="vlab_command", required=True, metavar="ACTION")
    build = vlab_commands.add_parser(
        "build", help="build (or reuse) the dom0 image, the default Xen builds and the "
                      "self-test builds derived from them")
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    build.set_defaults(func=cmd_vlab_build)
    vlab_commands.add_parser(
        "up", help="build if needed, start one BMC per host; hosts stay powered off"
    ).set_defaults(func=cmd_vlab_up)
    vlab_commands.add_parser(
        "down", help="stop every process the virtual lab started, by PID"
    ).set_defaults(func=cmd_vlab_down)
    vlab_commands.add_parser(
        "status", help="processes, ports and power state of each virtual host, and the "
                       "disks kept with a build installed"
    ).set_defaults(func=cmd_vlab_status)
    vlab_commands.add_parser(
        "forget", help="remove the disks kept with a build installed (those no host runs "
                       "on): the next run installs its build"
    ).set_defaults(func=cmd_vlab_forget)

    run = commands.add_parser(
        "run", help="run a profile of scenarios against the lab and write reports",
        description="Validates lab and build, checks every BMC answers, runs the profile's "
                    "scenarios with pytest and writes reports/<run-id>/: index.html, "
                    "junit.xml, allure-results/ and com1/<host>.log. On the virtual lab it "
                    "builds and starts the lab first, and stops it afterwards. A lab file "
                    "with single_host_scenarios_beside runs the one-host scenarios of "
                    "several hosts side by side, a pytest session per host (output of the "
                    "others in sessions/<host>.log), then the two-host ones.")
    run.add_argument("--profile", help="scenario profile (default: default; see "
                     "--list-profiles)")
    run.add_argument("--test", action="append", metavar="TEST",
                     help="run only this test instead of a profile: a file or test id "
                          "relative to the harness's root, as `xenhil compare` prints it "
                          "(repeatable)")
    run.add_argument("--list-profiles", action="store_true", help="list the profiles and exit")
    run.add_argument("--build", help="Xen build under test: a directory of .deb or .rpm "
                     "files (default: the lab's default_build)")
    run.add_argument("--hosts", help="comma-separated hosts to use (default: all)")
    run.add_argument("--run-id", help="reports directory name (default: a UTC timestamp)")
    run.add_argument("--keep-up", action="store_true",
                     help="leave the virtual lab running afterwards")
    run.add_argument("--wait", type=float, default=DEFAULT_WAIT_MINUTES, metavar="MINUTES",
                     help="wait this long for hosts another run holds, saying who holds "
                          "them (default: %(default)g)")
    run.add_argument("--coordinator", metavar="HOST:PORT",
                     help="labgrid coordinator whose places lock the hosts (default: the "
                          "lab file's xenhil.coordinator; without one, local lock files)")
    run.add_argument("--kind", default="adhoc", choices=RUN_KINDS,
                     help="what the run is for (default: %(default)s); a passed nightly "
                          "or qualification run becomes the baseline of later runs")
    run.add_argument("--baseline", metavar="RUN",
                     help="compare with this run (default: the last passed nightly or "
                          "qualification run of the same profile on the same lab)")
    run.add_argument("--retest-regressions", action="store_true",
                     help="run each regressed test once more at the end; one that passes "
                          "then is FLAKY, not a regression (osstest's rule)")
    run.add_argument("--known-issues", type=Path, metavar="FILE",
                     help="reviewed known issues (default: known-issues.yaml of the "
                          "harness)")
    _database_option(run)
    run.add_argument("pytest_args", nargs="*", metavar="-- PYTEST_ARGS",
                     help="passed to pytest, e.g. -- -k dmesg")
    run.set_defaults(func=cmd_run)

    runs = commands.add_parser("runs", help="recent runs with their verdicts")
    runs.add_argument("--limit", type=int, default=20, help="how many (default: %(default)s)")
    runs.add_argument("--profile", help="only runs of this profile")
    _database_option(runs)
    runs.set_defaults(func=cmd_runs)

    compare = commands.add_parser(
        "compare", help="a run against its baseline: regressions, known issues, flaky tests",
        description="Labels every test that did not pass: REGRESSION (passed in the "
                    "baseline), LIKE BASELINE, NEVER PASSED on this lab, FLAKY (passed on "
                    "its retest), KNOWN (matches known-issues.yaml), BROKEN (the lab). "
                    "Figures worse than the median of earlier baseline runs by more than "
                    "their tolerance are flagged. Exits like `xenhil run`.")
    compare.add_argument("run", metavar="RUN", help="run id")
    _comparison_options(compare)
    compare.set_defaults(func=cmd_compare)

    history = commands.add_parser(
        "history", help="one test's status and figures over the last runs")
    history.add_argument("test", metavar="TEST_ID", help="test id as `xenhil compare` "
                         "prints it, e.g. testsuites/boot/test_boot.py::"
                         "test_expected_xen_version_booted[vlab1]")
    history.add_argument("--host", help="only runs where the test ran on this host")
    history.add_argument("--limit", type=int, default=20, help="how many runs "
                         "(default: %(default)s)")
    _database_option(history)
    history.set_defaults(func=cmd_history)

    report = commands.add_parser(
        "report", help="rebuild a run's pages from its allure-results and the database",
        description="Rebuilds index.html with the run's comparison against its baseline "
                    "(from the results database, with today's known issues). "
                    "Use it after a run was killed too (SIGKILL, OOM killer, a lost CI job): "
                    "the run then wrote neither index.html nor junit.xml, but allure-pytest "
                    "had written a result for every test that ended. Rebuilds index.html "
                    "always, and writes junit.xml only where it is missing: a junit.xml "
                    "that pytest wrote is kept, as it is richer (pytest's full report, "
                    "setup and teardown errors as their own entries). The test that was "
                    "running when the run was killed has no result and is not listed.")
    report.add_argument("run", metavar="RUN", help="run id (a directory under the reports "
                        "directory) or the path of a run directory")
    report.add_argument("--reports", type=Path, metavar="DIR",
                        help="reports directory to find RUN in (default: the lab file's "
                             "xenhil.reports)")
    _comparison_options(report)
    report.set_defaults(func=cmd_report)

    reproduce = commands.add_parser(
        "reproduce", help="run one test N times on one host: its failure rate k/N",
        description="Runs the test COUNT times on the same host, each attempt a run of "
                    "its own, and prints each attempt's result as it ends, then k/N: "
                    "the attempts that failed of those made.",
        epilog=REPRODUCE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    reproduce.add_argument("test", metavar="TEST", help="test id as `xenhil compare` and "
                           "`xenhil history` print it, with or without its host parameter")
    reproduce.add_argument("--host", help="host to run on (default: where the test last "
                           "failed, from the results database)")
    reproduce.add_argument("--build", type=_expanded_path,
                           help="Xen build: a directory of .deb or .rpm files (default: "
                                "the lab's default_build)")
    reproduce.add_argument("--count", type=int, required=True, help="attempts to make")
    reproduce.add_argument("--until", choices=("fail", "pass"),
                           help="stop after the first attempt that fails (or passes)")
    reproduce.add_argument("--fresh-boot", action="store_true",
                           help="install the build and power cycle the host for every "
                                "attempt (default: the first attempt does; later ones use "
                                "the host as it is while it still runs the build, and boot "
                                "it again after a crash)")
    _database_option(reproduce)
    reproduce.set_defaults(func=cmd_reproduce)

    bisect = commands.add_parser(
        "bisect", help="find the first bad build of a series, for one test on one host",
        description="Searches the builds between a good and a bad build for the first "
                    "that fails the test, confirming both ends first and the result last.",
        epilog=_bisect_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    bisect.add_argument("test", metavar="TEST", help="test id as `xenhil compare` and "
                        "`xenhil history` print it, with or without its host parameter")
    bisect.add_argument("--good", type=_expanded_path, required=True, metavar="BUILD",
                        help="a build directory the test passes on")
    bisect.add_argument("--bad", type=_expanded_path, required=True, metavar="BUILD",
                        help="a newer build directory the test fails on")
    bisect.add_argument("builds_listed", type=_expanded_path, nargs="*", metavar="BUILD",
                        help="the builds to search (build directories), in any order")
    bisect.add_argument("--builds", type=_expanded_path, metavar="DIR",
                        help="a directory whose subdirectories are the builds to search")
    bisect.add_argument("--confirm", type=int, metavar="K",
                        help="confirm each end K times before the search and the final "
                             "pair K times after it (default: 2 and 3)")
    bisect.add_argument("--runs-per-step", type=int, default=1, metavar="N",
                        help="runs per build; a build is bad if any fails "
                             "(default: %(default)s; more for an intermittent failure)")
    bisect.add_argument("--host", help="host to run on (default: where the test last "
                        "failed, from the results database)")
    _database_option(bisect)
    bisect.set_defaults(func=cmd_bisect)

    lab_commands = commands.add_parser("lab", help="the lab file").add_subparsers(
        dest="lab_command", required=True, metavar="ACTION")
    check = lab_commands.add_parser(
        "check", help="validate the lab file and reach every BMC, console and SSH endpoint")
    check.add_argument("--hosts", help="comma-separated hosts (default: all)")
    check.set_defaults(func=cmd_lab_check)
    trust = lab_commands.add_parser(
        "trust", help="show a host's SSH host key and record it in the lab's known_hosts",
        description="Connects to the host's SSH endpoint (no login), shows the key type and "
                    "SHA256 fingerprint it presents and, once you confirm, records it in the "
                    "file the lab names as ssh_known_hosts ([address]:port off port 22, as "
                    "OpenSSH does), replacing the key it had. Compare the fingerprint with "
                    "the host's own (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on "
                    "its console) before you confirm.")
    trust.add_argument("host", help="host name from the lab file")
    trust.add_argument("--yes", action="store_true", help="record without asking (scripts)")
    trust.add_argument("--timeout", type=float, default=15.0,
                       help="seconds to wait for the host's key (default: %(default)s)")
    trust.set_defaults(func=cmd_lab_trust)
    coordinator_help = ("HOST:PORT of the labgrid coordinator (default: the lab file's "
                        "xenhil.coordinator; without one, local lock files)")
    places = lab_commands.add_parser(
        "places", help="create the lab's places on its labgrid coordinator, with their tags",
        description="One place per host (xenhil.hosts.<host>.place, default <lab name>-<host>),"
                    " tagged with xenhil.hosts.<host>.tags; tags the lab file no longer has "
                    "are removed.")
    places.add_argument("--coordinator", help=coordinator_help)
    places.set_defaults(func=cmd_lab_places)
    release = lab_commands.add_parser(
        "release", help="free a host's lock that a killed run left, saying whose it was",
        description="Releases the host's place on the coordinator (labgrid's release-from), or "
                    "clears its local lock file. A lock of a process that still runs on "
                    "this machine is not released: end that run instead.")
    release.add_argument("host", help="host name from the lab file")
    release.add_argument("--coordinator", help=coordinator_help)
    release.set_defaults(func=cmd_lab_release)
    locks = lab_commands.add_parser("locks", help="who holds which host of the lab")
    locks.add_argument("--coordinator", help=coordinator_help)
    locks.set_defaults(func=cmd_lab_locks)

    console_parser = commands.add_parser(
        "console", help="show a host's com1 live (read-only unless --write)",
        description="Connects to the host's com1 port (it serves one client: not while a "
                    "run records it; read reports/<run-id>/com1/<host>.log instead).")
    console_parser.add_argument("host", help="host name from the lab file")
    console_parser.add_argument("--write", action="store_true",
                                help="send keyboard input to the console")
    console_parser.add_argument("--log", help="also record to this file "
                                "(default: <reports>/console/<host>-<time>.log)")
    console_parser.set_defaults(func=cmd_console)

    support = commands.add_parser(
        "support", help="collect a support bundle from a host (sos / supportconfig)",
        description="Runs the host's support collector (supportconfig on SUSE, sos plus "
                    "the harness's Xen section on Debian), fetches the archives over SSH, "
                    "checks them (checksum, read to the end), unpacks and indexes them under "
                    "<reports>/<run-id>/support/<host>/.")
    support.add_argument("host", help="host name from the lab file")
    support.add_argument("--run-id", help="reports directory name "
                         "(default: support-<UTC timestamp>)")
    support.set_defaults(func=cmd_support)

    power = commands.add_parser("power", help="chassis power of one host, through its BMC")
    power.add_argument("host", help="host name from the lab file")
    power.add_argument("action", choices=["on", "off", "cycle", "status"])
    power.set_defaults(func=cmd_power)
    return parser


def _database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="URL", help="results database: an SQLAlchemy URL "
                        "(postgresql://...) or an SQLite file (default: $XENHIL_DB, the lab "
                        "file's xenhil.results_db, or results.sqlite in $XENHIL_DATA or the "
                        "reports directory)")


def _comparison_options(parser: argparse.ArgumentParser) -> None:
    """What a recorded run is compared with, for `compare` and `report`."""
    parser.add_argument("--baseline", metavar="RUN", help="compare with this run "
                        "(default: the run's own baseline)")
    parser.add_argument("--known-issues", type=Path, metavar="FILE",
                        help="reviewed known issues (default: the harness's)")
    _database_option(parser)


def _open_db(args: argparse.Namespace, reports_dir: Path | None = None) -> ResultsDB:
    """The results database of --db, $XENHIL_DB or the lab file; else the SQLite file
    in $XENHIL_DATA or `reports_dir` (default: the lab's reports directory)."""
    from .results.db import ResultsDB, resolve_url

    lab = _lab(args, check_files=False)
    lab_value = lab.options.get("results_db")
    return ResultsDB.open(resolve_url(args.db, expand(lab_value) if lab_value else None,
                                      reports_dir or lab.reports_dir))


def cmd_runs(args: argparse.Namespace) -> int:
    from .results.views import format_runs

    db = _open_db(args)
    try:
        runs = db.runs(limit=args.limit, profile=args.profile)
        if not runs:
            console.print(f"no runs in {escape(db.describe())}")
            return 0
        console.print(format_runs(runs))
    finally:
        db.close()
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .results import analysis
    from .results.compare import exit_code
    from .results.render import render_text

    db = _open_db(args)
    try:
        result = analysis.analyse(db, args.run, baseline_id=args.baseline,
                                  known=analysis.known_issues(args.known_issues))
    finally:
        db.close()
    print(render_text(result.comparison))
    return exit_code(result.comparison.verdict)


def cmd_history(args: argparse.Namespace) -> int:
    from .results.views import format_history

    db = _open_db(args)
    try:
        entries = db.history(args.test, host=args.host, limit=args.limit)
    finally:
        db.close()
    if not entries:
        raise ConfigError(f"no result of {args.test} in the results database; test ids "
                          "are printed by `xenhil compare RUN`")
    console.print(format_history(args.test, entries))
    return 0


def error_line(error: BaseException) -> str:
    # Error text comes from hosts and BMCs: markup in it must show, not style or hide.
    return f"[bold red]error:[/] {escape(str(error))}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    try:
        result: int = args.func(args)
        return result
    except HarnessError as error:
        console.print(error_line(error))
        return 2
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
