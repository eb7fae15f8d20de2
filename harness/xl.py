"""Parsers for what `xl` and Xen print; pure functions, tested on recorded real output."""

from __future__ import annotations

import re
from dataclasses import dataclass


def parse_xl_info(text: str) -> dict[str, str]:
    """`xl info`: one `key : value` per line (values may contain colons)."""
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and " " not in key.strip():
            info[key.strip()] = value.strip()
    return info


@dataclass(frozen=True)
class Domain:
    name: str
    domid: int
    memory_mb: int
    vcpus: int
    state: str
    cpu_time: float


def parse_xl_list(text: str) -> list[Domain]:
    """`xl list`: a header line, then one domain per line."""
    domains = []
    for line in text.splitlines()[1:]:
        fields = line.rsplit(None, 5)
        if len(fields) != 6:
            continue
        name, domid, memory, vcpus, state, cpu_time = fields
        domains.append(Domain(name, int(domid), int(memory), int(vcpus), state,
                              float(cpu_time)))
    return domains


_XEN_BANNER = re.compile(r"Xen version (\S+) \(")
_DMESG_LINE = re.compile(r"^\(XEN\) (?:\[[^\]]*\] )?(.*)$")


def xen_version_from_console(text: str) -> str | None:
    """The version in Xen's boot banner, e.g. `(XEN) Xen version 4.17.5-pre (...)`."""
    match = _XEN_BANNER.search(text)
    return match.group(1) if match else None


def dmesg_messages(text: str) -> list[str]:
    """`xl dmesg` lines without the `(XEN)` prefix and timestamp."""
    messages = []
    for line in text.splitlines():
        match = _DMESG_LINE.match(line)
        messages.append(match.group(1) if match else line)
    return messages


@dataclass(frozen=True)
class DmesgFinding:
    line: str
    allowed_by: str | None  # the allow-list pattern that excuses it, if any


ERROR_SIGNS = re.compile(r"\b(error|fail(ed|ure)?|bug|warning|fatal|panic|"
                         r"unable|cannot|invalid)\b", re.IGNORECASE)


def dmesg_findings(text: str, allow: list[tuple[str, str]]) -> list[DmesgFinding]:
    """Lines of `xl dmesg` that look like errors, each with the allow-list entry
    (pattern, reason) that excuses it, or None."""
    compiled = [(re.compile(pattern), pattern) for pattern, _reason in allow]
    findings = []
    for message in dmesg_messages(text):
        if not ERROR_SIGNS.search(message):
            continue
        allowed = next((pattern for regex, pattern in compiled if regex.search(message)), None)
        findings.append(DmesgFinding(message, allowed))
    return findings
