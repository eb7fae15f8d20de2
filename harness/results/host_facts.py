"""What a host ran in a run: Xen, dom0 kernel, CPU and microcode, firmware, BMC firmware.

Gathered once per host after its build booted, so that a firmware or microcode change
is told apart from a Xen one. The host is untrusted: every command is bounded (the
timeout table's `command`), a command that fails leaves its field empty, and every
value is cut to printable text of a bounded length.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..xl import parse_xl_info
from .records import HostRecord

if TYPE_CHECKING:
    from ..host import Host

log = logging.getLogger(__name__)

FIELD_LIMIT = 200
CMDLINE_LIMIT = 1000  # Xen command lines with many options are longer than a field
DMIDECODE_KEYS = ("bios-vendor", "bios-version", "bios-release-date")
DMI_SYSFS = "/sys/class/dmi/id"
DMI_SYSFS_FILES = ("bios_vendor", "bios_version", "bios_date")


def clean(value: str, limit: int = FIELD_LIMIT) -> str:
    """Printable characters only (no escape sequences from the host), at most `limit`."""
    return "".join(ch for ch in value if ch.isprintable()).strip()[:limit]


def parse_xen(xl_info: str) -> tuple[str, str]:
    """(Xen version, Xen command line) from `xl info`. xen_version holds xen_extra
    already ("4.17" + ".7"); it is composed from the parts where it is missing."""
    info = parse_xl_info(xl_info)
    version = info.get("xen_version", "")
    if not version and "xen_major" in info:
        version = f"{info['xen_major']}.{info.get('xen_minor', '')}{info.get('xen_extra', '')}"
    return clean(version), clean(info.get("xen_commandline", ""), CMDLINE_LIMIT)


def parse_uname_release(text: str) -> str:
    """`uname -r`: its first line."""
    return clean(text.strip().partition("\n")[0])


def parse_cpuinfo(text: str) -> tuple[str, str]:
    """(model name, microcode) of the first CPU in /proc/cpuinfo."""
    model = microcode = ""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep:
            continue
        if key == "model name" and not model:
            model = clean(value)
        elif key == "microcode" and not microcode:
            microcode = clean(value)
        if model and microcode:
            break
    return model, microcode


def parse_dmidecode_string(text: str) -> str:
    """`dmidecode -s KEY`: the first line that is not one of its `#` comments."""
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            return clean(line)
    return ""


def firmware_text(vendor: str, version: str, date: str) -> str:
    """"SeaBIOS 1.16.2-debian-1.16.2-1 (04/01/2014)": vendor, version, release date."""
    text = " ".join(part for part in (vendor, version) if part)
    if date:
        text = f"{text} ({date})" if text else date
    return clean(text)


def parse_mc_info(text: str) -> str:
    """The BMC's firmware revision from `ipmitool mc info`."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "Firmware Revision":
            return clean(value)
    return ""


def _output(host: Host, command: str) -> str:
    """The command's stdout, or "" if it failed or the host did not answer."""
    try:
        result = host.run(command, check=False)
    except Exception as error:  # facts are context: a host fault is the test's to report
        log.warning("%s: host facts: `%s` failed: %s", host.name, command, error)
        return ""
    return result.stdout if result.ok else ""


def _bmc_firmware(host: Host) -> str:
    mc_info = getattr(host.power, "mc_info", None)  # a power driver without a BMC has none
    if mc_info is None:
        return ""
    try:
        return parse_mc_info(mc_info())
    except Exception as error:  # as above: the BMC's health is the liveness monitor's
        log.warning("%s: host facts: ipmitool mc info failed: %s", host.name, error)
        return ""


def gather(host: Host) -> HostRecord:
    """What `host` runs now, each field empty where the host could not tell."""
    xen_version, xen_cmdline = parse_xen(_output(host, "xl info"))
    cpu_model, microcode = parse_cpuinfo(
        _output(host, "grep -m 4 -E '^(model name|microcode)[[:space:]]*:' /proc/cpuinfo"))
    if _output(host, "command -v dmidecode"):
        firmware = firmware_text(*(parse_dmidecode_string(_output(host, f"dmidecode -s {key}"))
                                   for key in DMIDECODE_KEYS))
    else:  # the kernel's copy of the same DMI strings (no dmidecode on the host)
        firmware = firmware_text(*(clean(_output(host, f"cat {DMI_SYSFS}/{name}"))
                                   for name in DMI_SYSFS_FILES))
    return HostRecord(
        name=host.name, xen_version=xen_version, xen_cmdline=xen_cmdline,
        dom0_kernel=parse_uname_release(_output(host, "uname -r")),
        cpu_model=cpu_model, microcode=microcode, firmware=firmware,
        bmc_firmware=_bmc_firmware(host))
