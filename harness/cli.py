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

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from .errors import ConfigError, HarnessError
from .ipmi import IPMITool, bmc_secrets
from .lab import DEFAULT_LAB, Lab, load_lab
from .paths import cache_dir

# soft_wrap: long paths and error messages stay on one line (copyable, greppable).
console = Console(stderr=True, soft_wrap=True)

EPILOG = """\
examples:
  xenhil run                        default profile on the virtual lab (what `make run` does)
  xenhil run --build DIR --hosts vlab1 -- -k dmesg
  xenhil report RUN_ID              index.html and junit.xml of a run that was killed
  xenhil lab check --lab labs/my-lab.yaml
  xenhil console vlab1              live com1, read-only
  xenhil vlab build                 build the virtual lab's image and default Xen builds
                                    (and the defective and series builds derived from them)
  xenhil vlab up                    start the virtual lab's BMCs (hosts stay off)
  xenhil power vlab1 on             power a host on through its BMC
  xenhil vlab status                what runs, on which ports, power state
  xenhil vlab down                  stop everything the virtual lab started
  xenhil support vlab1              collect a support bundle (sos / supportconfig) now

The lab file (--lab, default labs/vlab.yaml) says where every host's BMC, com1 and SSH
are. The virtual lab's images and state live in $XENHIL_CACHE (default ~/.cache/xen-hil).
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
    return 0


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
    from .runner import PROFILES, run

    if args.list_profiles:
        for name, profile in PROFILES.items():
            print(f"{name:<10} {profile.description} ({', '.join(profile.paths)})")
        return 0
    outcome = run(
        args.lab,
        profile=args.profile,
        build=args.build,
        hosts=args.hosts.split(",") if args.hosts else None,
        run_id=args.run_id,
        keep_up=args.keep_up,
        extra_pytest_args=args.pytest_args,
    )
    tally = ", ".join(f"{count} {status}" for status, count in sorted(outcome.tally.items()))
    console.rule("xen-hil run interrupted" if outcome.exit_code > 128
                 else "xen-hil run finished")
    console.print(f"results : {tally or 'no tests ran'}")
    console.print(f"report  : {outcome.html}")
    console.print(f"com1    : {outcome.reports / 'com1'}")
    console.print(f"junit   : {outcome.reports / 'junit.xml'}")
    return outcome.exit_code


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
    from .report import counts, junit_older_than_results, read_results, write_html, write_junit

    run_dir = _run_directory(args)
    allure_dir = run_dir / "allure-results"
    if not allure_dir.is_dir():
        raise ConfigError(f"{allure_dir}: not found, so {run_dir} is not the directory of "
                          "a `xenhil run`; give reports/<run-id> or its run id")
    results = read_results(allure_dir)
    if not results:
        raise ConfigError(f"{allure_dir}: no test result (the run stopped before its first "
                          "test ended), nothing to report; run the profile again")
    html = write_html(run_dir, f"xen-hil run {run_dir.name} (rebuilt from allure-results)",
                      results)
    console.print(f"report  : {html} (rebuilt)")
    junit = run_dir / "junit.xml"
    if not junit.exists():
        console.print(f"junit   : {write_junit(run_dir, results)} (from allure-results)")
    elif junit_older_than_results(run_dir):
        console.print(f"junit   : {junit} kept, but it is older than allure-results: from an "
                      "earlier run with this id? Delete it and run `xenhil report` again")
    else:
        console.print(f"junit   : {junit} kept (pytest's, richer than allure-results)")
    # read_results sorts by status, so the tally lists failed first.
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
    parser.add_argument("--lab", type=Path, default=DEFAULT_LAB,
                        help="lab file (default: %(default)s)")
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
        "status", help="processes, ports and power state of each virtual host"
    ).set_defaults(func=cmd_vlab_status)

    run = commands.add_parser(
        "run", help="run a profile of scenarios against the lab and write reports",
        description="Validates lab and build, checks every BMC answers, runs the profile's "
                    "scenarios with pytest and writes reports/<run-id>/: index.html, "
                    "junit.xml, allure-results/ and com1/<host>.log. On the virtual lab it "
                    "builds and starts the lab first, and stops it afterwards.")
    run.add_argument("--profile", default="default", help="scenario profile (default: "
                     "%(default)s; see --list-profiles)")
    run.add_argument("--list-profiles", action="store_true", help="list the profiles and exit")
    run.add_argument("--build", help="Xen build under test: a directory of .deb or .rpm "
                     "files (default: the lab's default_build)")
    run.add_argument("--hosts", help="comma-separated hosts to use (default: all)")
    run.add_argument("--run-id", help="reports directory name (default: a UTC timestamp)")
    run.add_argument("--keep-up", action="store_true",
                     help="leave the virtual lab running afterwards")
    run.add_argument("pytest_args", nargs="*", metavar="-- PYTEST_ARGS",
                     help="passed to pytest, e.g. -- -k dmesg")
    run.set_defaults(func=cmd_run)

    report = commands.add_parser(
        "report", help="rebuild a run's index.html and junit.xml from its allure-results",
        description="Use it after a run was killed (SIGKILL, OOM killer, a lost CI job): "
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
    report.set_defaults(func=cmd_report)

    lab_commands = commands.add_parser("lab", help="the lab file").add_subparsers(
        dest="lab_command", required=True, metavar="ACTION")
    check = lab_commands.add_parser(
        "check", help="validate the lab file and reach every BMC, console and SSH endpoint")
    check.add_argument("--hosts", help="comma-separated hosts (default: all)")
    check.set_defaults(func=cmd_lab_check)

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
