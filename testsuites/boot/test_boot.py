"""Boot: the build under test boots on every host, and is the Xen we think it is.

Procedure (once per host): install the build, make its Xen entry the GRUB default,
power cycle through the BMC, watch com1 from the first byte to dom0's login, then
check over SSH what runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import allure
import pytest
import yaml

from harness.build import XenBuild
from harness.distro import distro
from harness.host import Host
from harness.install import xen_cmdline
from harness.xl import dmesg_findings, parse_xl_info, parse_xl_list, xen_version_from_console

pytestmark = pytest.mark.area("boot")

ALLOW_LIST = Path(__file__).with_name("dmesg-allow.yaml")
# Each daemon with its alternatives: the C xenstored or the OCaml one (Debian's choice).
XEN_DAEMONS = (("xenstored", "oxenstored"), ("xenconsoled",))


def test_expected_xen_version_booted(xen_host: Host, build: XenBuild) -> None:
    banner = xen_version_from_console(xen_host.boot_console())
    info = parse_xl_info(xen_host.run("xl info").stdout)
    assert banner == build.xen_version, f"com1 banner shows Xen {banner}"
    assert info["xen_version"] == build.xen_version
    allure.dynamic.label("xen_version", info["xen_version"])
    allure.dynamic.label("dom0_kernel", info["release"])


def test_xen_command_line_as_configured(xen_host: Host) -> None:
    expected = xen_cmdline(xen_host.spec)
    running = parse_xl_info(xen_host.run("xl info").stdout)["xen_commandline"]
    assert set(expected.split()) <= set(running.split()), running
    on_console = re.search(r"\(XEN\) Command line: (.*)", xen_host.boot_console())
    assert on_console is not None, "Xen printed no command line on com1"
    assert set(expected.split()) <= set(on_console.group(1).split())


def test_xl_dmesg_has_no_unexpected_errors(xen_host: Host) -> None:
    dmesg = xen_host.run("xl dmesg").stdout
    allure.attach(dmesg, name=f"{xen_host.name} xl dmesg",
                  attachment_type=allure.attachment_type.TEXT)
    allow = [(entry["pattern"], entry["reason"])
             for entry in yaml.safe_load(ALLOW_LIST.read_text())["allow"]
             if xen_host.name in entry.get("hosts", [xen_host.name])]
    unexpected = [f.line for f in dmesg_findings(dmesg, allow) if f.allowed_by is None]
    assert unexpected == [], f"xl dmesg has errors not in {ALLOW_LIST.name}"


def test_xen_daemons_active(xen_host: Host) -> None:
    for alternatives in XEN_DAEMONS:
        running = [name for name in alternatives
                   if xen_host.run(f"pgrep -x {name}", check=False).ok]
        assert running, f"none of {', '.join(alternatives)} is running"
    for service in distro(xen_host.spec.family).xen_services:
        state = xen_host.run(f"systemctl is-active {service}", check=False).stdout.strip()
        assert state == "active", f"{service}.service is {state}"
    assert xen_host.run("cat /proc/xen/capabilities").stdout.strip() == "control_d"


def test_dom0_memory_as_configured(xen_host: Host) -> None:
    configured = re.match(r"(\d+)M", xen_host.spec.dom0_mem)
    if configured is None:
        pytest.skip(f"dom0_mem {xen_host.spec.dom0_mem!r} is not a plain size in MiB")
    dom0 = next(d for d in parse_xl_list(xen_host.run("xl list").stdout) if d.domid == 0)
    assert dom0.memory_mb == int(configured.group(1))


def test_boot_timeline_recorded(xen_host: Host) -> None:
    assert xen_host.booted is not None
    timeline = xen_host.booted.timeline
    allure.attach(timeline.render(), name=f"{xen_host.name} boot timeline",
                  attachment_type=allure.attachment_type.TEXT)
    stages = [name for name, _ in timeline.stages]
    assert stages == ["firmware", "bootloader", "xen", "dom0 kernel", "login", "ssh"]
    times = [at for _, at in timeline.stages]
    assert times == sorted(times)
