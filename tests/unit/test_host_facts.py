"""Host facts for the results database, parsed from recorded outputs: `xl info` of
Xen 4.17.7 on the virtual lab, /proc/cpuinfo of an AMD EPYC machine, `ipmitool mc
info` answered by the virtual lab's BMC (ipmi_sim with its lab definition)."""

from __future__ import annotations

from pathlib import Path

from harness.results.host_facts import (
    CMDLINE_LIMIT,
    FIELD_LIMIT,
    clean,
    firmware_text,
    parse_cpuinfo,
    parse_dmidecode_string,
    parse_mc_info,
    parse_uname_release,
    parse_xen,
)

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
