"""SUSE's hotplug script block-npiv, which makes the guest disk: it creates the vport
when the guest starts and deletes it when the guest goes. The order of the fields of its
disk target is read from the script on the host (`npiv_target_fields`).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InfrastructureError
from .wwn import VportName

if TYPE_CHECKING:
    from ..host import Host

SCRIPTS_DIR = "/etc/xen/scripts"


class NpivScriptUnreadable(InfrastructureError):
    """The host's block-npiv script does not say how it reads its disk target."""


# The names block-npiv gives the fields of its disk target, -> the harness's names.
TARGET_FIELD_NAMES = {
    "VPWWPN": "vport_wwpn", "VPORTWWPN": "vport_wwpn",
    "VPWWNN": "vport_wwnn", "VPORTWWNN": "vport_wwnn",
    "TGTWWPN": "target_wwpn",
    "LUN": "lun",
    "FABRIC": "fabric", "FABRICNM": "fabric", "FABRICNAME": "fabric",
}
_PEEL = re.compile(r"^\s*(\w+)=\$\{(\w+)##([*-]+)\}", re.MULTILINE)
_REST = r"^\s*(\w+)=\$\{?{var}\}?\s*$"
_INDEXED = re.compile(r"^\s*(\w+)=\$\{(\w+)\[(\d+)\]\}", re.MULTILINE)


def _field_name(variable: str, script_name: str) -> str:
    name = TARGET_FIELD_NAMES.get(variable) or TARGET_FIELD_NAMES.get(variable.removesuffix("S"))
    if name is None:
        raise NpivScriptUnreadable(
            f"{script_name} reads a disk target field {variable}, which the harness does not "
            f"know (known: {', '.join(sorted(TARGET_FIELD_NAMES))})")
    return name


def npiv_target_layouts(script: str, script_name: str = "block-npiv") -> list[tuple[str, ...]]:
    """The field orders of the hyphen-separated disk target that a block-npiv script
    accepts, read from its code (not its comments). Two shell idioms are understood:
    fields peeled off the right end (`LUN=${ARGS##*-*-}; ARGS=${ARGS%-*}` ..., the rest
    is the first field), and the target split into an array (`X=${ARGS[0]}` ...; a new
    layout starts where the index goes back, as in a branch per accepted syntax)."""
    layouts: list[tuple[str, ...]] = []
    peeled = _PEEL.findall(script)
    if peeled:
        variable = peeled[0][1]
        names = [name for name, source, _ in peeled if source == variable]
        last = list(_PEEL.finditer(script))[len(names) - 1]
        rest = re.compile(_REST.replace("{var}", variable), re.MULTILINE).search(
            script, last.end())
        if rest is None:
            raise NpivScriptUnreadable(f"{script_name} peels fields off ${variable} but never "
                                       "takes the rest as the first field")
        layouts.append(tuple(_field_name(n, script_name) for n in [rest.group(1),
                                                                   *reversed(names)]))
    current: dict[int, str] = {}
    for name, _, index in _INDEXED.findall(script):
        if current and int(index) <= max(current):
            layouts.append(tuple(current[i] for i in sorted(current)))
            current = {}
        current[int(index)] = _field_name(name, script_name)
    if current:
        layouts.append(tuple(current[i] for i in sorted(current)))
    if not layouts:
        raise NpivScriptUnreadable(
            f"{script_name}: no disk target parsing found (neither ${{X##*-}} peeling nor "
            "${X[i]} fields): cannot tell the field order")
    for layout in layouts:
        if {"vport_wwpn", "target_wwpn", "lun"} - set(layout):
            raise NpivScriptUnreadable(f"{script_name}: a disk target layout without a vport "
                                       f"WWPN, target WWPN and LUN: {'-'.join(layout)}")
    return layouts


def npiv_target_fields(script: str, script_name: str = "block-npiv") -> tuple[str, ...]:
    """The layout to write: the shortest one the script accepts (SUSE's block-npiv
    still accepts the old five-field form next to the current one)."""
    return min(npiv_target_layouts(script, script_name), key=len)


@dataclass(frozen=True)
class NpivDisk:
    """One guest disk that is a LUN reached through a vport."""

    vport: VportName
    target_wwpn: str
    lun: int
    fabric_name: str

    def target(self, fields: tuple[str, ...]) -> str:
        values = {"vport_wwpn": self.vport.wwpn, "vport_wwnn": self.vport.wwnn,
                  "target_wwpn": self.target_wwpn, "lun": str(self.lun),
                  "fabric": self.fabric_name}
        return "-".join(values[name] for name in fields)

    def xl_disk(self, fields: tuple[str, ...], vdev: str) -> str:
        """The xl disk spec (xl-disk-configuration(5); target= must come last)."""
        return f"vdev={vdev}, access=rw, script=block-npiv, target={self.target(fields)}"


def read_target_fields(host: Host, scripts_dir: str = SCRIPTS_DIR) -> tuple[str, ...]:
    path = f"{scripts_dir}/block-npiv"
    result = host.run(f"cat {shlex.quote(path)}", check=False)
    if not result.ok:
        raise NpivScriptUnreadable(f"{host.name}: cannot read {path}: "
                                   f"{result.stderr.strip()}")
    return npiv_target_fields(result.stdout, path)
