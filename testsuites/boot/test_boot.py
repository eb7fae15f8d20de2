"""Boot: the build under test boots on every host, and is the Xen we think it is.

Procedure (once per host): install the build, make its Xen entry the GRUB default,
power cycle through the BMC, watch com1 from the first byte to dom0's login, then
check over SSH what runs.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import allure
import pytest
import yaml

from harness.build import XenBuild
from harness.distro import distro
from harness.host import Host
from harness.install import hypervisor_image, xen_cmdline
from harness.strategy import STAGES
from harness.xl import dmesg_findings, parse_xl_info, parse_xl_list

pytestmark = pytest.mark.area("boot")

ALLOW_LIST = Path(__file__).with_name("dmesg-allow.yaml")
# Each daemon with its alternatives: the C xenstored or the OCaml one (Debian's choice).
XEN_DAEMONS = (("xenstored", "oxenstored"), ("xenconsoled",))
# A wait checks its deadline between attempts, so it may end this much after its timeout.
WAIT_OVERRUN = 5.0  # s


def test_expected_xen_version_booted(xen_host: Host, build: XenBuild) -> None:
    """What the host reports now, not what its boot showed (boot_build checked that):
    the running Xen's version in `xl info` and /sys/hypervisor, the hypervisor package
    installed, and the running Xen's build id inside the image that package installed.
    Holds for a host reused with --reuse-booted as well."""
    expected = build.xen_version
    info = parse_xl_info(xen_host.run("xl info").stdout)
    allure.dynamic.label("xen_version", info.get("xen_version", ""))
    allure.dynamic.label("dom0_kernel", info.get("release", ""))
    assert info.get("xen_version", "").startswith(expected), \
        f"xl info shows Xen {info.get('xen_version')}, the build is {expected}"
    major, minor, extra = xen_host.run(
        "cat /sys/hypervisor/version/major /sys/hypervisor/version/minor "
        "/sys/hypervisor/version/extra").stdout.split("\n")[:3]
    assert f"{major}.{minor}{extra}" == info["xen_version"], \
        "the dom0 kernel (/sys/hypervisor/version) and xl info disagree on the Xen version"
    package = build.hypervisor
    listed = xen_host.run(distro(xen_host.spec.family).installed_versions([package.name]),
                          check=False).stdout.split()
    assert listed[:2] == [package.name, package.version], \
        f"{package.name} installed: {' '.join(listed[1:2]) or 'none'}; the build has " \
        f"{package.version}"
    # The build id is raw bytes in the image. perl (perl-base is essential on Debian,
    # in SUSE's base too) finds them in 2 s under TCG; a hex dump through od took 17-20 s.
    build_id = info.get("build_id", "")
    image = hypervisor_image(build)
    assert re.fullmatch(r"[0-9a-f]{40,}", build_id), f"xl info shows no build id: {build_id!r}"
    search = f'exit(index($_, pack("H*", "{build_id}")) < 0)'
    assert xen_host.run(f"zcat {shlex.quote(image)} | perl -0777 -ne {shlex.quote(search)}",
                        check=False).ok, \
        f"the running Xen (build id {build_id}) is not {image} of {build.label}"


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
    """The last power cycle's timeline: every stage in order, each within its timeout
    after the one before, and the dom0 kernel com1 showed is the one running now."""
    timeline = xen_host.strategy.timeline
    if timeline is None:
        pytest.skip(f"{xen_host.name} was reused (--reuse-booted) without a power cycle "
                    "this session: there is no boot timeline to check")
    waits = [(stage.name, stage.timeout) for stage in STAGES]
    waits.append(("ssh", "ssh_after_power_cycle"))
    assert [name for name, _ in timeline.stages] == [name for name, _ in waits], \
        timeline.render()
    # The firmware stage also holds the power cycle itself, which has a timeout of its own.
    for (name, at), (_, before), (_, timeout) in zip(
            timeline.stages[1:], timeline.stages[:-1], waits[1:], strict=True):
        limit = xen_host.timeouts[timeout] + WAIT_OVERRUN
        assert at - before <= limit, (f"{name} took {at - before:.1f} s after the stage "
                                      f"before, over {timeout} ({limit:.0f} s)")
    running = xen_host.run("uname -r").stdout.strip()
    assert timeline.seen.get("dom0 kernel") == running, \
        f"com1 showed dom0 kernel {timeline.seen.get('dom0 kernel')}, {running} runs"
