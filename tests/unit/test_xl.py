"""xl and Xen console parsers, on output recorded from Xen 4.17.7 on the virtual lab."""

from __future__ import annotations

from pathlib import Path

from harness.xl import (
    dmesg_findings,
    dmesg_messages,
    parse_xl_info,
    parse_xl_list,
    xen_version_from_console,
)

DATA = Path(__file__).parent.parent / "data"


def test_xl_info_fields() -> None:
    info = parse_xl_info((DATA / "xl/xl-info-4.17.7-vlab.txt").read_text())
    assert info["xen_version"] == "4.17.7"
    assert (info["xen_major"], info["xen_minor"], info["xen_extra"]) == ("4", "17", ".7")
    assert info["release"] == "6.1.0-50-amd64"
    assert info["virt_caps"].split() == ["pv", "hvm", "gnttab-v1", "gnttab-v2"]
    # Values with colons and spaces survive whole.
    assert info["xen_commandline"] == ("placeholder console=com1 com1=115200,8n1 loglvl=all "
                                       "guest_loglvl=all dom0_mem=1024M,max:1024M")
    assert info["cc_compile_date"] == "Wed Nov  4 16:52:28 UTC 2026"


def test_xl_list_dom0() -> None:
    domains = parse_xl_list((DATA / "xl/xl-list-dom0-only.txt").read_text())
    assert len(domains) == 1
    dom0 = domains[0]
    assert (dom0.name, dom0.domid, dom0.memory_mb, dom0.vcpus) == ("Domain-0", 0, 1024, 1)
    assert dom0.state == "r-----"
    assert dom0.cpu_time > 0


def test_xen_version_from_the_boot_banner() -> None:
    com1 = (DATA / "boot/com1-xen-4.17.7-boot.raw").read_bytes().decode(errors="replace")
    assert xen_version_from_console(com1) == "4.17.7"
    assert xen_version_from_console("(XEN) Xen is booting") is None


def test_dmesg_messages_lose_their_prefix() -> None:
    messages = dmesg_messages((DATA / "xl/xl-dmesg-4.17.7-vlab.txt").read_text())
    assert messages[0].startswith("Xen version 4.17.7 (Debian 4.17.7+13-g2445b30a44")
    assert messages[1] == "build-id: 151b373fd64b321593bf987fd923cd10dabadac4"
    assert not any(m.startswith("(XEN)") for m in messages)


def test_dmesg_findings_on_a_clean_boot_and_with_an_injected_error() -> None:
    text = (DATA / "xl/xl-dmesg-4.17.7-vlab.txt").read_text()
    clean = [f.line for f in dmesg_findings(text, allow=[]) if f.allowed_by is None]
    added = text + "(XEN) [   12.000000] d0v0 Failed to map page 0x1234: -22\n"
    findings = dmesg_findings(added, allow=[])
    new = [f.line for f in findings if f.allowed_by is None and f.line not in clean]
    assert new == ["d0v0 Failed to map page 0x1234: -22"]
    allowed = dmesg_findings(added, allow=[(r"Failed to map page", "known, bsc#1")])
    assert all(f.allowed_by for f in allowed if "map page" in f.line)
