"""`xenhil`: the command line of the harness.

Every command validates the lab file before it touches a host, and says what to fix.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from .errors import HarnessError
from .ipmi import IPMITool
from .lab import DEFAULT_LAB, Lab, load_lab
from .paths import cache_dir

console = Console(stderr=True)

EPILOG = """\
examples:
  xenhil vlab build                 build the virtual lab's image and default Xen builds
  xenhil vlab up                    start the virtual lab's BMCs (hosts stay off)
  xenhil power vlab1 on             power a host on through its BMC
  xenhil vlab status                what runs, on which ports, power state
  xenhil vlab down                  stop everything the virtual lab started

The lab file (--lab, default labs/vlab.yaml) says where every host's BMC, com1 and SSH
are. The virtual lab's images and state live in $XENHIL_CACHE (default ~/.cache/xen-hil).
"""


def _lab(args: argparse.Namespace, *, check_files: bool = True) -> Lab:
    return load_lab(args.lab, check_files=check_files)


def cmd_vlab_build(args: argparse.Namespace) -> int:
    from .vlab.builds import fetch_builds
    from .vlab.image import build_image

    image = build_image(cache_dir(), force=args.force)
    builds = fetch_builds(cache_dir(), image, force=args.force)
    console.print(f"image: {image.disk}")
    for build in builds:
        console.print(f"build: {build}")
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

    table = Table(title=f"virtual lab {lab.name} ({lab.path})")
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
    lab = _lab(args)
    ipmi = IPMITool(lab.host(args.host).bmc)
    if args.action == "status":
        print(f"{args.host}: power {'on' if ipmi.power_status() else 'off'}")
        return 0
    action: Callable[[], None] = {
        "on": ipmi.power_on, "off": ipmi.power_off, "cycle": ipmi.power_cycle,
    }[args.action]
    action()
    took = ipmi.wait_power(args.action != "off", timeout=30 * lab.timeout_factor)
    print(f"{args.host}: power {'off' if args.action == 'off' else 'on'} ({took:.1f} s)")
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
        "build", help="build (or reuse) the dom0 image and the default Xen builds")
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

    power = commands.add_parser("power", help="chassis power of one host, through its BMC")
    power.add_argument("host", help="host name from the lab file")
    power.add_argument("action", choices=["on", "off", "cycle", "status"])
    power.set_defaults(func=cmd_power)
    return parser


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
        console.print(f"[bold red]error:[/] {error}")
        return 2
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
