"""NPIV: Fibre Channel virtual ports (vports) for guest disks, over SSH.

Everything is read and done through the Linux FC transport's sysfs interface
(Documentation/scsi/scsi_fc_transport.rst), with the host's shell (`Host.run`), so
every read and write is in the test's transcript:

  /sys/class/fc_host/hostN        an FC port: port_name, node_name, fabric_name,
                                  port_state, port_type, max_npiv_vports,
                                  npiv_vports_inuse; vport_create takes "WWPN:WWNN"
  /sys/class/fc_vports/vport-H:C-N  a vport: port_name, node_name, vport_state;
                                  vport_delete takes "1"; device/hostM is its scsi_host
  /sys/class/scsi_device/H:C:T:L  a LUN; device/../fc_transport/targetH:C:T/port_name is
                                  the target port it sits behind; device/block/sdX its disk

`root` puts all of it under another directory, so that tests can point the very same
code at a tree they made (tests/e2e/scenarios/fc_sysfs_tree.py).

The guest disk itself is SUSE's hotplug script block-npiv: it creates the vport when
the guest starts and deletes it when the guest goes. The order of the fields of its
disk target is read from the script on the host (`npiv_target_fields`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import InfrastructureError, ProductFailure

if TYPE_CHECKING:
    from .host import Host

WWN_HEX_DIGITS = 16
SCRIPTS_DIR = "/etc/xen/scripts"
NPIV_SCRIPTS = ("block-npiv", "block-npiv-common.sh", "block-npiv-vport")
FC_HOST_ATTRIBUTES = ("port_name", "node_name", "fabric_name", "port_state", "port_type",
                      "max_npiv_vports", "npiv_vports_inuse")
VPORT_ATTRIBUTES = ("port_name", "node_name", "vport_state", "vport_type")


class InvalidWWN(ValueError):
    """Text that is not a World Wide Name."""


class NpivScriptUnreadable(InfrastructureError):
    """The host's block-npiv script does not say how it reads its disk target."""


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


def missing_scripts(host: Host, scripts_dir: str = SCRIPTS_DIR) -> list[str]:
    paths = " ".join(shlex.quote(f"{scripts_dir}/{name}") for name in NPIV_SCRIPTS)
    output = host.run(f"for f in {paths}; do [ -e \"$f\" ] || echo \"$f\"; done").stdout
    return output.split()


@dataclass(frozen=True)
class Preflight:
    """What a host offers for the NPIV scenarios: the port to use, or what is missing."""

    port: FCHost | None
    missing: tuple[str, ...]

    @property
    def ready(self) -> bool:
        return self.port is not None and not self.missing


def npiv_preflight(host: Host, config: NpivConfig | None, sysfs: FCSysfs | None = None,
                   scripts_dir: str = SCRIPTS_DIR) -> Preflight:
    """An Online NPort HBA with a free vport on the lab's fabric, and SUSE's block-npiv
    scripts; otherwise exactly what is missing, for the skip reason."""
    sysfs = sysfs or FCSysfs(host)
    missing: list[str] = []
    if config is None:
        missing.append(f"no npiv: section for {host.name} in the lab file (fabric_name, "
                       "target_wwpn, luns, vport_pool)")
    port = None
    if not sysfs.fc_transport_loaded():
        missing.append(f"no FC HBA: {sysfs.path('/sys/class/fc_host')} does not exist (FC "
                       "transport scsi_transport_fc not loaded)")
    else:
        ports = sysfs.fc_hosts()
        if not ports:
            missing.append(f"no FC HBA: {sysfs.path('/sys/class/fc_host')} is empty")
        fabric = config.fabric_name if config is not None else None
        usable = [p for p in ports if not p.npiv_problems(fabric)]
        if usable:
            port = usable[0]
        elif ports:
            missing.append("no FC port can take a vport: " + "; ".join(
                f"{p.name}: {', '.join(p.npiv_problems(fabric))}" for p in ports))
    missing += [f"{path} missing (SUSE xen-tools' NPIV hotplug scripts)"
                for path in missing_scripts(host, scripts_dir)]
    return Preflight(port, tuple(missing))


def free_vport_name(pool: Iterable[VportName], present: Iterable[Vport]) -> VportName:
    """The first name of the host's pool that no vport on the host uses now."""
    used = {vport.port_name for vport in present}
    pool = list(pool)
    for name in pool:
        if name.wwpn not in used:
            return name
    raise InfrastructureError(f"every WWPN of the vport pool is in use on the host "
                              f"({', '.join(n.wwpn for n in pool)}): leaked vports? delete "
                              "them or add WWPNs to the pool")


def leaked_vports(pool: Iterable[VportName], present: Iterable[Vport]) -> list[Vport]:
    """Vports with a WWPN of the lab's pool that exist although no guest of ours runs."""
    wwpns = {name.wwpn for name in pool}
    return [vport for vport in present if vport.port_name in wwpns]


class NpivFailure(ProductFailure):
    """block-npiv or the FC stack did not do what it promises: a vport that does not
    come, a LUN that does not appear, a vport that stays."""


class NpivHost:
    """A host ready for NPIV guests (its preflight passed): its port, its lab
    parameters, and the disk target layout of its block-npiv."""

    def __init__(self, host: Host, config: NpivConfig, port: FCHost,
                 sysfs: FCSysfs | None = None, scripts_dir: str = SCRIPTS_DIR) -> None:
        self.host = host
        self.config = config
        self.port = port
        self.sysfs = sysfs or FCSysfs(host)
        self.fields = read_target_fields(host, scripts_dir)

    def disk(self, lun: int | None = None) -> NpivDisk:
        """A disk of the lab's target, through a vport name of the host's pool that is
        not in use on the host now."""
        name = free_vport_name(self.config.vport_pool, self.sysfs.vports())
        return NpivDisk(vport=name, target_wwpn=self.config.target_wwpn,
                        lun=self.config.luns[0] if lun is None else lun,
                        fabric_name=self.config.fabric_name)

    def vports_in_use(self) -> int | None:
        port = next((p for p in self.sysfs.fc_hosts() if p.name == self.port.name), None)
        return port.npiv_vports_inuse if port is not None else None

    def leaked(self) -> list[Vport]:
        return leaked_vports(self.config.vport_pool, self.sysfs.vports())

    def wait_vport_active(self, wwpn: str) -> Vport:
        found: list[Vport] = []

        def active() -> bool:
            vport = self.sysfs.vport(wwpn)
            found[:] = [vport] if vport is not None else []
            return vport is not None and vport.active and vport.scsi_host is not None

        timeout = self.host.timeouts["npiv_vport"]
        try:
            self.host.wait_for(f"vport {wwpn} Active", active, timeout, interval=2)
        except TimeoutError:
            state = (f"it is {found[0].vport_state!r} ({found[0].name})" if found
                     else "it is not in fc_vports")
            raise NpivFailure(f"{self.host.name}: vport {wwpn} not Active within "
                              f"{timeout:.0f} s: {state}") from None
        return found[0]

    def wait_lun(self, vport: Vport, lun: int) -> Lun:
        assert vport.scsi_host is not None
        found: list[Lun] = []

        def visible() -> bool:
            hit = self.sysfs.find_lun(vport.scsi_host or "", self.config.target_wwpn, lun)
            found[:] = [hit] if hit is not None and hit.block else []
            return bool(found)

        timeout = self.host.timeouts["npiv_lun"]
        try:
            self.host.wait_for(f"LUN {lun} on {vport.scsi_host}", visible, timeout, interval=2)
        except TimeoutError:
            seen = ", ".join(f"{s.address} target {s.target_wwpn} {s.block}"
                             for s in self.sysfs.luns(vport.scsi_host))
            raise NpivFailure(
                f"{self.host.name}: LUN {lun} behind target {self.config.target_wwpn} not "
                f"visible on {vport.scsi_host} ({vport.name}) within {timeout:.0f} s; it "
                f"sees: {seen or 'nothing'}") from None
        return found[0]

    def wait_vport_gone(self, wwpn: str) -> None:
        timeout = self.host.timeouts["npiv_vport_gone"]
        try:
            self.host.wait_for(f"vport {wwpn} gone", lambda: self.sysfs.vport(wwpn) is None,
                               timeout, interval=2)
        except TimeoutError:
            raise NpivFailure(f"{self.host.name}: vport {wwpn} still in fc_vports "
                              f"{timeout:.0f} s after its guest went: leaked") from None
