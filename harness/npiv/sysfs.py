"""The Linux FC transport's sysfs interface (Documentation/scsi/scsi_fc_transport.rst),
read and written with the host's shell (`Host.run`), so that every read and write is in
the test's transcript:

  /sys/class/fc_host/hostN        an FC port: port_name, node_name, fabric_name,
                                  port_state, port_type, max_npiv_vports,
                                  npiv_vports_inuse; vport_create takes "WWPN:WWNN"
  /sys/class/fc_vports/vport-H:C-N  a vport: port_name, node_name, vport_state;
                                  vport_delete takes "1"; device/hostM is its scsi_host
  /sys/class/scsi_device/H:C:T:L  a LUN; device/../fc_transport/targetH:C:T/port_name is
                                  the target port it sits behind; device/block/sdX its disk

`root` puts all of it under another directory, so that tests can point the very same
code at a tree they made (tests/e2e/scenarios/fc_sysfs_tree.py).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .wwn import VportName, parse_wwn, sysfs_wwn

if TYPE_CHECKING:
    from ..host import Host

FC_HOST_ATTRIBUTES = ("port_name", "node_name", "fabric_name", "port_state", "port_type",
                      "max_npiv_vports", "npiv_vports_inuse")
VPORT_ATTRIBUTES = ("port_name", "node_name", "vport_state", "vport_type")


@dataclass(frozen=True)
class FCHost:
    """An fc_host (a physical FC port, or the fc_host of a vport)."""

    name: str  # hostN
    port_name: str | None
    node_name: str | None
    fabric_name: str | None
    port_state: str
    port_type: str
    max_npiv_vports: int | None
    npiv_vports_inuse: int | None
    vport_create: bool  # the driver can create vports on it

    @property
    def free_vports(self) -> int:
        if self.max_npiv_vports is None or self.npiv_vports_inuse is None:
            return 0
        return self.max_npiv_vports - self.npiv_vports_inuse

    def npiv_problems(self, fabric_name: str | None = None) -> list[str]:
        """Why a vport cannot be created here (what block-npiv checks, and the fabric
        the lab names); empty when it can."""
        problems = []
        if not self.vport_create:
            problems.append("no vport_create (the driver does not do NPIV)")
        if self.port_state != "Online":
            problems.append(f"port_state is {self.port_state!r}, not 'Online'")
        if not self.port_type.startswith("NPort"):
            problems.append(f"port_type is {self.port_type!r}, not NPort (NPIV needs a "
                            "point-to-point fabric login)")
        if self.vport_create and self.free_vports <= 0:
            problems.append(f"no free vport: max_npiv_vports {self.max_npiv_vports}, "
                            f"npiv_vports_inuse {self.npiv_vports_inuse}")
        if fabric_name is not None and self.fabric_name != fabric_name:
            problems.append(f"fabric_name is {self.fabric_name or 'unknown'}, the lab file "
                            f"says {fabric_name}")
        return problems


@dataclass(frozen=True)
class Vport:
    name: str  # vport-H:C-N
    port_name: str | None
    node_name: str | None
    vport_state: str
    scsi_host: str | None  # hostM: the vport's own SCSI host (its LUNs are there)

    @property
    def parent(self) -> str:
        """The fc_host it was created on (H of vport-H:C-N)."""
        return "host" + self.name.removeprefix("vport-").split(":")[0]

    @property
    def active(self) -> bool:
        return self.vport_state == "Active"


@dataclass(frozen=True)
class Lun:
    address: str  # H:C:T:L
    target_wwpn: str | None
    block: str | None  # sdX

    @property
    def number(self) -> int:
        return int(self.address.rsplit(":", 1)[1])


@dataclass(frozen=True)
class SysfsClass:
    """A sysfs class directory read in one go: present at all, and its entries."""

    present: bool
    entries: dict[str, dict[str, str]] = field(default_factory=dict)


def dump_command(class_dir: str, attributes: Iterable[str], probes: dict[str, str]) -> str:
    """A shell command printing `entry<TAB>attribute<TAB>value` for every entry of a
    sysfs class directory, `#absent` when the directory is not there. `probes` maps a
    name to a shell expression (run in the entry's directory) whose output is printed
    the same way, e.g. whether a write-only attribute exists."""
    lines = [f"cd {shlex.quote(class_dir)} 2>/dev/null || {{ echo '#absent'; exit 0; }}",
             "for e in *; do [ -e \"$e\" ] || continue"]
    for attribute in attributes:
        lines.append(f"  [ -r \"$e/{attribute}\" ] && printf '%s\\t%s\\t%s\\n' \"$e\" "
                     f"{attribute} \"$(cat \"$e/{attribute}\" 2>/dev/null)\"")
    for name, expression in probes.items():
        lines.append(f"  printf '%s\\t%s\\t%s\\n' \"$e\" {name} \"$(cd \"$e\" && "
                     f"{{ {expression}; }} 2>/dev/null)\"")
    lines.append("done; true")
    return "\n".join(lines)


def parse_dump(output: str) -> SysfsClass:
    if output.strip() == "#absent":
        return SysfsClass(present=False)
    entries: dict[str, dict[str, str]] = {}
    for line in output.splitlines():
        if not line.strip():
            continue
        entry, attribute, value = ([*line.split("\t", 2), "", ""])[:3]
        entries.setdefault(entry, {})[attribute] = value.strip()
    return SysfsClass(present=True, entries=entries)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _wwn(value: str | None) -> str | None:
    try:
        return sysfs_wwn(value) if value else None
    except ValueError:
        return None


def fc_hosts_from(dump: SysfsClass) -> list[FCHost]:
    hosts = []
    for name, attrs in sorted(dump.entries.items(), key=lambda item: _host_number(item[0])):
        hosts.append(FCHost(
            name=name,
            port_name=_wwn(attrs.get("port_name")),
            node_name=_wwn(attrs.get("node_name")),
            fabric_name=_wwn(attrs.get("fabric_name")),
            port_state=attrs.get("port_state", ""),
            port_type=attrs.get("port_type", ""),
            max_npiv_vports=_int(attrs.get("max_npiv_vports")),
            npiv_vports_inuse=_int(attrs.get("npiv_vports_inuse")),
            vport_create=attrs.get("vport_create") == "yes",
        ))
    return hosts


def vports_from(dump: SysfsClass) -> list[Vport]:
    return [Vport(name=name, port_name=_wwn(attrs.get("port_name")),
                  node_name=_wwn(attrs.get("node_name")),
                  vport_state=attrs.get("vport_state", ""),
                  scsi_host=attrs.get("scsi_host") or None)
            for name, attrs in sorted(dump.entries.items())]


def luns_from(output: str) -> list[Lun]:
    """Lines `H:C:T:L<TAB>target port_name<TAB>block device` (lun_command)."""
    luns = []
    for line in output.splitlines():
        if not line.strip():
            continue
        address, target, block = ([*line.split("\t"), "", ""])[:3]
        luns.append(Lun(address=address.strip(), target_wwpn=_wwn(target.strip()),
                        block=block.strip() or None))
    return luns


def _host_number(name: str) -> int:
    digits = name.removeprefix("host")
    return int(digits) if digits.isdigit() else -1


class FCSysfs:
    """The FC transport of one host, read and driven over SSH."""

    def __init__(self, host: Host, root: str = "/") -> None:
        self.host = host
        self.root = root.rstrip("/")

    def path(self, path: str) -> str:
        return f"{self.root}{path}"

    def _dump(self, command: str) -> SysfsClass:
        return parse_dump(self.host.run(command).stdout)

    def fc_host_command(self) -> str:
        return dump_command(self.path("/sys/class/fc_host"), FC_HOST_ATTRIBUTES,
                            {"vport_create": "[ -e vport_create ] && echo yes"})

    def vports_command(self) -> str:
        # the vport's scsi_host is a child of the device its fc_vports entry belongs to
        return dump_command(self.path("/sys/class/fc_vports"), VPORT_ATTRIBUTES,
                            {"scsi_host": "cd device && ls -d host[0-9]* | head -n 1"})

    def fc_transport_loaded(self) -> bool:
        return self._dump(dump_command(self.path("/sys/class/fc_host"), (), {})).present

    def fc_hosts(self) -> list[FCHost]:
        return fc_hosts_from(self._dump(self.fc_host_command()))

    def vports(self) -> list[Vport]:
        return vports_from(self._dump(self.vports_command()))

    def vport(self, wwpn: str) -> Vport | None:
        wwpn = parse_wwn(wwpn)
        return next((vport for vport in self.vports() if vport.port_name == wwpn), None)

    def create_vport(self, fc_host: str, name: VportName) -> None:
        """Write WWPN:WWNN to the fc_host's vport_create (no 0x: the kernel refuses it)."""
        self.host.run(f"echo {name} > "
                      f"{shlex.quote(self.path(f'/sys/class/fc_host/{fc_host}/vport_create'))}")

    def delete_vport(self, vport: Vport) -> None:
        self.host.run(f"echo 1 > "
                      f"{shlex.quote(self.path(f'/sys/class/fc_vports/{vport.name}/vport_delete'))}")

    def lun_command(self, scsi_host: str) -> str:
        return lun_command(self.path("/sys/class/scsi_device"), _host_number(scsi_host))

    def luns(self, scsi_host: str) -> list[Lun]:
        """The LUNs on a SCSI host (a vport's), each with the WWPN of its target port."""
        return luns_from(self.host.run(self.lun_command(scsi_host)).stdout)

    def find_lun(self, scsi_host: str, target_wwpn: str, lun: int) -> Lun | None:
        """The LUN `lun` behind target port `target_wwpn` on `scsi_host`, as block-npiv
        looks for it."""
        target_wwpn = parse_wwn(target_wwpn)
        return next((found for found in self.luns(scsi_host)
                     if found.target_wwpn == target_wwpn and found.number == lun), None)


def lun_command(scsi_device_dir: str, host_number: int) -> str:
    """Every SCSI device of SCSI host `host_number`: address, the port_name of its FC
    target (fc_transport class of the target, the parent of the device), its disk."""
    directory = shlex.quote(scsi_device_dir)
    return (f"for s in {directory}/{host_number}:*; do [ -e \"$s\" ] || continue; "
            "t=$(cat \"$s\"/device/../fc_transport/target*/port_name "
            "\"$s\"/device/../fc_transport:target*/port_name 2>/dev/null | head -n 1); "
            "b=$(ls \"$s\"/device/block 2>/dev/null | head -n 1); "
            "printf '%s\\t%s\\t%s\\n' \"${s##*/}\" \"$t\" \"$b\"; done; true")
