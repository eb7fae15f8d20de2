"""Host facts for the results database, parsed from recorded outputs: `xl info` of
Xen 4.17.7 on the virtual lab, /proc/cpuinfo of an AMD EPYC machine, `ipmitool mc
info` answered by the virtual lab's BMC (ipmi_sim with its lab definition)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.ipmi import BMC, IPMITool
from harness.lab import SSHEndpoint
from harness.remote import CommandResult, RemoteHost
from harness.results.host_facts import (
    CMDLINE_LIMIT,
    FIELD_LIMIT,
    clean,
    firmware_text,
    gather,
    parse_cpuinfo,
    parse_dmidecode_string,
    parse_mc_info,
    parse_uname_release,
    parse_xen,
)
from harness.vlab.machine import BMC_COMMANDS

from .sshserver import SSHServer

DATA = Path(__file__).parent.parent / "data"


def test_xen_version_and_command_line_from_xl_info() -> None:
    version, cmdline = parse_xen((DATA / "xl" / "xl-info-4.17.7-vlab.txt").read_text())
    assert version == "4.17.7"
    assert cmdline == ("placeholder console=com1 com1=115200,8n1 loglvl=all "
                       "guest_loglvl=all dom0_mem=1024M,max:1024M")


def test_xen_version_is_composed_where_xl_info_lacks_it() -> None:
    text = (DATA / "xl" / "xl-info-4.17.7-vlab.txt").read_text()
    without = "\n".join(line for line in text.splitlines()
                        if not line.startswith("xen_version"))
    assert parse_xen(without)[0] == "4.17.7"
    assert parse_xen("") == ("", "")


def test_cpu_model_and_microcode_of_the_first_cpu() -> None:
    text = (DATA / "hostfacts" / "cpuinfo-amd-epyc.txt").read_text()
    assert parse_cpuinfo(text) == ("AMD EPYC", "0x1000065")
    assert parse_cpuinfo("processor\t: 0\n") == ("", "")


def test_bmc_firmware_revision_from_mc_info() -> None:
    text = (DATA / "hostfacts" / "ipmitool-mc-info-ipmi_sim.txt").read_text()
    assert parse_mc_info(text) == "9.08"
    assert parse_mc_info("Error: Unable to establish IPMI v2 / RMCP+ session\n") == ""


def test_firmware_from_dmidecode_strings() -> None:
    vendor = parse_dmidecode_string("SeaBIOS\n")
    # newer SMBIOS than dmidecode knows: a comment comes first
    version = parse_dmidecode_string(
        "# SMBIOS implementations newer than version 3.3.0 are not\n"
        "# fully supported by this version of dmidecode.\n1.16.2-debian-1.16.2-1\n")
    date = parse_dmidecode_string("04/01/2014\n")
    assert firmware_text(vendor, version, date) == "SeaBIOS 1.16.2-debian-1.16.2-1 (04/01/2014)"
    assert firmware_text("", "", "") == ""
    assert parse_dmidecode_string("") == ""


def test_uname_release() -> None:
    assert parse_uname_release("6.1.0-50-amd64\n") == "6.1.0-50-amd64"


def test_untrusted_text_is_cut_and_loses_control_characters() -> None:
    hostile = "Firmware Revision : 1.0\x1b[31m" + "A" * 5000 + "\n"
    revision = parse_mc_info(hostile)
    assert len(revision) == FIELD_LIMIT and "\x1b" not in revision
    assert clean("a\x00b\rc\u202ed") == "abcd"
    cmdline = parse_xen("xen_commandline : " + "x" * 5000)[1]
    assert len(cmdline) == CMDLINE_LIMIT


class LabHost:
    """What gather() uses of a harness.host.Host: its name, commands over SSH, and its
    power driver (here the IPMI tool itself, against a real ipmi_sim)."""

    def __init__(self, remote: RemoteHost, power: object) -> None:
        self.name = remote.name
        self.remote = remote
        self.power = power

    def run(self, command: str, *, check: bool = True) -> CommandResult:
        return self.remote.run(command, check=check, timeout=30)


@pytest.fixture
def bmc(tmp_path: Path) -> Iterator[BMC]:
    """ipmi_sim, with the virtual lab's BMC definition, on a free loopback UDP port."""
    if shutil.which("ipmi_sim") is None:
        pytest.skip("ipmi_sim is not installed (make setup installs Debian's openipmi)")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "state").mkdir()
    (tmp_path / "password").write_text("facts-test\n")
    config = tmp_path / "lan.conf"
    config.write_text("\n".join([
        'name "xenhil-facts"', "set_working_mc 0x20", "  startlan 1",
        f"    addr 127.0.0.1 {port}", "    priv_limit admin", "    allowed_auths_admin md5",
        f"    guid {1:032x}",  # without one, ipmi_sim refuses RMCP+ sessions
        "  endlan", '  user 2 true "admin" "facts-test" admin 10 md5', ""]))
    (tmp_path / "bmc.emu").write_text(BMC_COMMANDS)
    simulator = subprocess.Popen(["ipmi_sim", "-n", "-c", str(config), "-f",
                                  str(tmp_path / "bmc.emu"), "-s", str(tmp_path / "state")],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    try:
        yield BMC("vlab1", "127.0.0.1", port=port, password_file=tmp_path / "password")
    finally:
        simulator.kill()
        simulator.wait(timeout=10)


def test_gather_from_a_host_over_ssh_and_its_bmc(ssh_server: SSHServer, bmc: BMC) -> None:
    endpoint = SSHEndpoint("127.0.0.1", ssh_server.port, "root", ssh_server.client_key_file,
                           ssh_server.host_public_key_file)
    remote = RemoteHost("vlab1", endpoint)
    try:
        # this machine runs no Xen, nor (here) dmidecode: those fields stay empty
        record = gather(LabHost(remote, IPMITool(bmc, retries=5, retry_delay=0.5)))
    finally:
        remote.close()
    assert record.name == "vlab1"
    assert (record.xen_version, record.xen_cmdline) == ("", "")
    assert record.dom0_kernel == os.uname().release
    assert (record.cpu_model, record.microcode) == parse_cpuinfo(
        Path("/proc/cpuinfo").read_text())
    if shutil.which("dmidecode") is None:
        assert record.firmware == ""
    assert record.bmc_firmware == "9.08"  # ipmi_sim, as the lab defines it


def test_gather_leaves_the_bmc_firmware_empty_when_the_bmc_does_not_answer(
        ssh_server: SSHServer, tmp_path: Path) -> None:
    endpoint = SSHEndpoint("127.0.0.1", ssh_server.port, "root", ssh_server.client_key_file,
                           ssh_server.host_public_key_file)
    (tmp_path / "password").write_text("x\n")
    silent = BMC("vlab1", "127.0.0.1", port=9, password_file=tmp_path / "password")
    remote = RemoteHost("vlab1", endpoint)
    start = time.monotonic()
    try:
        record = gather(LabHost(remote, IPMITool(silent, retries=1, call_timeout=3)))
    finally:
        remote.close()
    assert time.monotonic() - start < 10  # bounded by the BMC call's timeout
    assert record.bmc_firmware == "" and record.dom0_kernel == os.uname().release
