"""World Wide Names and a host's NPIV parameters from the lab file.

The lab model (harness.lab) imports this module, so it must not import harness.host:
host -> install -> lab -> here -> host would be an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

WWN_HEX_DIGITS = 16


class InvalidWWN(ValueError):
    """Text that is not a World Wide Name."""


def parse_wwn(text: str) -> str:
    """A WWN as the kernel's vport_create and SUSE's scripts want it: 16 lower-case hex
    digits. Accepts what people and sysfs write: a 0x prefix (sysfs prints "0x%llx"),
    colons between byte pairs (switches, arrays), upper case."""
    raw = str(text).strip()
    digits = raw.lower()
    if digits.startswith("0x"):
        digits = digits[2:]
    if ":" in digits:
        pairs = digits.split(":")
        if len(pairs) != 8 or any(len(pair) != 2 for pair in pairs):
            raise InvalidWWN(f"{raw!r} is not a WWN: with colons it must be 8 byte pairs "
                             "like 21:00:00:24:ff:3a:1b:2c")
        digits = "".join(pairs)
    bad = sorted({char for char in digits if char not in "0123456789abcdef"})
    if bad:
        raise InvalidWWN(f"{raw!r} is not a WWN: {', '.join(map(repr, bad))} is not a hex "
                         "digit")
    if len(digits) != WWN_HEX_DIGITS:
        raise InvalidWWN(f"{raw!r} is not a WWN: {len(digits)} hex digits, a WWN has "
                         f"{WWN_HEX_DIGITS} (e.g. 0x21000024ff3a1b2c or "
                         "21:00:00:24:ff:3a:1b:2c)")
    return digits


def sysfs_wwn(value: str) -> str | None:
    """A WWN attribute as sysfs shows it ("0x%llx": no leading zeros) -> 16 digits;
    None for 0 (the kernel's "not known", e.g. fabric_name while the link is down)."""
    number = int(value.strip(), 16)
    return f"{number:016x}" if number else None


def default_wwnn(wwpn: str) -> str:
    """The vport WWNN SUSE's scripts derive from a WWPN when none is given: hex digit 7
    set to 0 (digit 7 tells a node name from a port name)."""
    wwpn = parse_wwn(wwpn)
    return wwpn[:6] + "0" + wwpn[7:]


@dataclass(frozen=True)
class VportName:
    """A vport's identity: the WWPN it logs in with, and its WWNN."""

    wwpn: str
    wwnn: str

    def __str__(self) -> str:
        return f"{self.wwpn}:{self.wwnn}"  # what vport_create takes


@dataclass(frozen=True)
class NpivConfig:
    """A host's Fibre Channel parameters from the lab file (`npiv:` of the host)."""

    fabric_name: str
    target_wwpn: str
    luns: tuple[int, ...]
    vport_pool: tuple[VportName, ...]
