"""The lab model: a lab file, validated before anything touches a host.

A lab file is a labgrid environment (`targets`, one per host, with the resources
IPMIPowerPort, NetworkService and one console: Com1Port, NetworkSerialPort,
RawSerialPort, IPMISOLPort or PlaceSerialPort) plus a `xenhil` section with the harness's
options (distro family, timeout factor, Xen command line, SSH key, ...). Options under
`xenhil.defaults` apply to every host; `xenhil.hosts.<name>` overrides them.

Every problem is reported as one ConfigError naming the file, the host and the field.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .console_transport import ConsolePort, RawTCPPort, RFC2217Port, SerialDevicePort, SOLPort
from .distro import FAMILIES
from .errors import ConfigError
from .exported_console import PlaceSerialPort
from .ipmi import BMC
from .npiv.wwn import InvalidWWN, NpivConfig, VportName, default_wwnn, parse_wwn
from .paths import UnknownVariable, data_root, expand, lab_file_path, labs_dir
from .timeouts import TIMEOUTS, Timeouts
from .yaml_file import load_yaml

DEFAULT_LAB = labs_dir() / "vlab.yaml"
# Like labgrid's LG_ENV: the lab file to use when none is given.
LAB_VARIABLE = "XENHIL_LAB"


def default_lab() -> Path:
    """$XENHIL_LAB if it is set, else the virtual lab."""
    return Path(os.environ.get(LAB_VARIABLE) or DEFAULT_LAB)

HOST_OPTIONS = {
    "family": str,
    "timeout_factor": (int, float),
    "dom0_mem": str,
    "xen_cmdline_extra": str,
    "xen_console": str,
    "ssh_key_file": str,
    "ssh_host_key_file": str,
    "ssh_known_hosts": str,
    "link_address": str,
    "routed_guest_network": str,
    "nat_guest_network": str,
    "npiv": Mapping,
    "place": str,
    "tags": Mapping,
}
NPIV_FIELDS = ("fabric_name", "target_wwpn", "luns", "vport_pool")
# The `xenhil` section's own keys; `hosts` and `defaults` hold HOST_OPTIONS.
LAB_OPTIONS = {
    "name": str,
    "reports": str,
    "timeout_factor": (int, float),
    "timeouts": Mapping,
    "single_host_scenarios_on": list,
    "single_host_scenarios_beside": Mapping,
    "default_build": str,
    "defaults": Mapping,
    "hosts": Mapping,
    "vlab": Mapping,
    # where the lab's runs are recorded: an SQLAlchemy URL (a lab shared by runners)
    "results_db": str,
    "coordinator": str,
    "local_migrations": int,
}
# `xenhil.vlab`: how `xenhil vlab up` builds each machine of a virtual lab.
VLAB_OPTIONS = {"memory_mb": int, "vcpus": int, "keep_installed": int, "hosts": Mapping}
# labgrid would act on its other top-level keys (`imports` runs Python files, `tools`
# and `options` change what it runs): a lab file has these two only.
TOP_LEVEL_KEYS = ("targets", "xenhil")

# A host's console, one per host: ours for raw TCP, Serial-over-LAN and the serial port
# an exporter serves for the host's place; labgrid's for RFC 2217 ports (ser2net) and
# serial devices on this machine.
CONSOLE_RESOURCES = {
    "Com1Port": ("host", "port", "speed"),
    "NetworkSerialPort": ("host", "port", "speed", "protocol"),
    "RawSerialPort": ("port", "speed"),
    "IPMISOLPort": ("speed",),
    "PlaceSerialPort": ("speed", "resource"),
}
# The UARTs Xen can put its console on (its comN= options).
XEN_CONSOLES = ("com1", "com2")
SERIAL_SPEEDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800,
                 921600)

# labgrid target names; they also end up in file names, shell commands and reports.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# Xen's dom0_mem: a comma list of <sz>, min:<sz>, max:<sz>, where <sz> is a size (negative:
# host memory minus it) or [<size>+]<percent>%; it goes on Xen's command line as written.
_XEN_SIZE = r"-?[0-9]+[BKMGTbkmgt]?"
_DOM0_MEM_ITEM = rf"(?:(?:min|max):)?(?:{_XEN_SIZE}|(?:{_XEN_SIZE}\+)?[0-9]{{1,2}}%)"
_DOM0_MEM = re.compile(rf"{_DOM0_MEM_ITEM}(?:,{_DOM0_MEM_ITEM})*")
# Xen options (`name`, `name=value,value`), blank-separated. The line goes into
# /etc/default/grub and from there, unquoted, into grub.cfg: no quotes, `$`, `;`,
# braces, globs or newlines.
_XEN_OPTION_CHARACTERS = "letters, digits and _.,:=+%@/-"
_XEN_CMDLINE = re.compile(r"[A-Za-z0-9_.,:=+%@/-]+(?: +[A-Za-z0-9_.,:=+%@/-]+)*")
# labgrid place tags: its own key syntax; values a word, as `labgrid-client reserve
# key=value` filters are written.
_TAG_KEY = re.compile(r"[a-z][a-z0-9_]+")
_TAG_VALUE = re.compile(r"[A-Za-z0-9_.-]+")
# labgrid's port when an address names none.
COORDINATOR_PORT = 20408


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int

    def __str__(self) -> str:
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{address}:{self.port}"


@dataclass(frozen=True)
class SSHEndpoint:
    address: str
    port: int
    username: str
    key_file: Path | None
    host_key_file: Path | None  # the host's public key, pinned
    known_hosts_file: Path | None = None  # OpenSSH's format; `xenhil lab trust` adds to it


@dataclass(frozen=True)
class HostSpec:
    """One host of the lab, as the lab file describes it."""

    name: str
    bmc: BMC
    console: ConsolePort
    ssh: SSHEndpoint
    family: str = "debian"
    timeout_factor: float = 1.0
    dom0_mem: str = "1024M,max:1024M"
    xen_cmdline_extra: str = ""
    xen_console: str = "com1"  # the UART the console resource carries, Xen's console=
    link_address: str | None = None
    # Where routed (vif-route) and NAT (vif-nat) guests of this host get addresses.
    routed_guest_network: ipaddress.IPv4Network | None = None
    nat_guest_network: ipaddress.IPv4Network | None = None
    npiv: NpivConfig | None = None  # the host's Fibre Channel fabric, if it has one
    # The labgrid place (and local lock file) standing for this host, and its tags.
    place: str = ""
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Lab:
    path: Path
    name: str
    hosts: dict[str, HostSpec]
    reports_dir: Path
    timeout_factor: float = 1.0
    timeout_overrides: dict[str, float] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    # Where one-host scenarios run when no hosts are chosen: on identical hosts (the
    # virtual lab's clones) once is enough; two-host scenarios still use the others.
    single_host_scenarios_on: tuple[str, ...] = ()
    # One-host scenarios under these paths (relative to the harness's root) run on
    # these other hosts instead, at the same time (harness.sessions): host -> paths.
    single_host_scenarios_beside: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # HOST:PORT of the labgrid coordinator the lab is shared through; None: local locks.
    coordinator: str | None = None
    # How often the local migration scenario moves a guest to its own host (osstest's
    # guest-localmigrate x10).
    local_migrations: int = 10

    def host(self, name: str) -> HostSpec:
        try:
            return self.hosts[name]
        except KeyError:
            known = ", ".join(sorted(self.hosts))
            raise ConfigError(
                f"{self.path}: unknown host {name!r}; this lab has: {known}"
            ) from None

    def timeouts(self, host: HostSpec) -> Timeouts:
        """The timeout table for `host`: lab overrides, lab factor times host factor."""
        return Timeouts(self.timeout_factor * host.timeout_factor,
                        tuple(self.timeout_overrides.items()))

    def select(self, names: list[str] | None) -> list[HostSpec]:
        """The named hosts, in the order given; all hosts when no names are given."""
        if not names:
            return list(self.hosts.values())
        return [self.host(name) for name in names]


class _Checker:
    """Reads typed fields out of the YAML and names the place of every problem."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {where}: {problem}")

    def coordinator(self, value: str, where: str) -> str:
        try:
            return coordinator_address(value)
        except ValueError as error:
            raise self.fail(where, str(error)) from None

    def mapping(self, value: object, where: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, f"expected a mapping, got {type(value).__name__}")
        return value

    def get(self, data: Mapping[str, Any], key: str, kind: Any, where: str,
            default: Any = ...) -> Any:
        if key not in data or data[key] is None:
            if default is ...:
                raise self.fail(f"{where}.{key}", "missing")
            return default
        value = data[key]
        # bool is an int to Python; a port of `true` is still a mistake.
        if isinstance(value, bool) and kind is not bool:
            raise self.fail(f"{where}.{key}", f"expected {_kind_name(kind)}, got {value!r}")
        if not isinstance(value, kind):
            raise self.fail(f"{where}.{key}", f"expected {_kind_name(kind)}, got {value!r}")
        return value

    def wwn(self, value: object, where: str) -> str:
        if not isinstance(value, str):
            # YAML reads an all-digit WWN without quotes as a number: its digits are lost.
            raise self.fail(where, f"write the WWN in quotes (got {type(value).__name__} "
                            f"{value!r})")
        try:
            return parse_wwn(value)
        except InvalidWWN as error:
            raise self.fail(where, str(error)) from None

    def port(self, data: Mapping[str, Any], key: str, where: str, default: Any = ...) -> int:
        value = self.get(data, key, int, where, default)
        if not 0 < value < 65536:
            raise self.fail(f"{where}.{key}", f"{value} is not a TCP/UDP port")
        return int(value)

    def address(self, data: Mapping[str, Any], key: str, where: str) -> str:
        value = self.get(data, key, str, where)
        if not _is_address(value):
            raise self.fail(f"{where}.{key}", f"{value!r} is not an IP address or a DNS name")
        return str(value)

    def positive(self, value: float, where: str) -> float:
        if not (math.isfinite(value) and value > 0):
            raise self.fail(where, f"must be a finite number greater than 0, got {value!r}")
        return float(value)

    def variables_set(self, value: str, where: str) -> str:
        """`value` with its ${VARIABLE}s expanded; each must be set."""
        try:
            return expand(value)
        except UnknownVariable as unknown:
            raise self.fail(where, f"refers to ${{{unknown.args[0]}}}, which is not set") from None

    def file(self, value: str, where: str, must_exist: bool) -> Path:
        expanded = self.variables_set(value, where)
        path = lab_file_path(value, self.path.parent)
        if must_exist and not path.exists():
            # Named as written: a variable's value may be a secret.
            relative = ("" if Path(expanded).is_absolute()
                        else f" (relative to {self.path.parent.resolve()})")
            raise self.fail(where, f"{value}{relative} does not exist")
        return path


def _is_address(value: str) -> bool:
    try:
        # Python takes any text as an IPv6 scope (fe80::1%eth0; reboot): no scopes here.
        return "%" not in str(ipaddress.ip_address(value))
    except ValueError:
        pass
    labels = value.removesuffix(".").split(".")
    # An all-digit last label is no DNS name (RFC 3696): 198.51.100.999 is a bad IPv4 address.
    return (len(value) <= 253 and not labels[-1].isdigit()
            and all(_DNS_LABEL.fullmatch(label) for label in labels))


def coordinator_address(value: str) -> str:
    """`value` (HOST or HOST:PORT, an IPv6 address in brackets) as HOST:PORT."""
    port = str(COORDINATOR_PORT)
    if value.startswith("["):
        bare, _, rest = value[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{value!r} is not HOST or HOST:PORT of a labgrid coordinator")
            port = rest[1:]
    elif value.count(":") == 1:
        bare, port = value.split(":")
    else:  # a name, an IPv4 address or an IPv6 address without a port
        bare = value
    if not _is_address(bare):
        raise ValueError(f"{value!r} is not HOST or HOST:PORT of a labgrid coordinator")
    if not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{value!r}: {port!r} is not a TCP port")
    return f"[{bare}]:{int(port)}" if ":" in bare else f"{bare}:{int(port)}"


def _kind_name(kind: Any) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return str(kind.__name__)


def load_lab(path: Path | str | None = None, *, check_files: bool = True) -> Lab:
    """Load and validate a lab file. `check_files=False` skips checking that the
    key and password files exist (for `xenhil vlab up`, which creates them)."""
    path = Path(path) if path is not None else default_lab()
    check = _Checker(path)
    if not path.is_file():
        raise ConfigError(f"{path}: lab file not found")
    data = check.mapping(load_yaml(path), "top level")
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise check.fail(str(key), f"unknown top-level key (allowed: "
                             f"{', '.join(TOP_LEVEL_KEYS)})")
    targets = check.mapping(check.get(data, "targets", Mapping, "top level"), "targets")
    if not targets:
        raise check.fail("targets", "no hosts defined")
    for name in targets:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise check.fail(f"targets.{name}", "a host name is letters, digits and ._- "
                             "only, not starting with . or -")
    options = check.mapping(data.get("xenhil") or {}, "xenhil")
    for key in options:
        if key not in LAB_OPTIONS:
            raise check.fail(f"xenhil.{key}", f"unknown option (known: "
                             f"{', '.join(sorted(LAB_OPTIONS))})")
        check.get(options, key, LAB_OPTIONS[key], "xenhil", None)
    lab_name = check.get(options, "name", str, "xenhil", path.stem)
    defaults = check.mapping(options.get("defaults") or {}, "xenhil.defaults")
    per_host = check.mapping(options.get("hosts") or {}, "xenhil.hosts")
    coordinator = (check.coordinator(options["coordinator"], "xenhil.coordinator")
                   if options.get("coordinator") is not None else None)
    if "npiv" in defaults:
        raise check.fail("xenhil.defaults.npiv", "NPIV is per host (each host needs its own "
                         "vport WWPN pool): move it to xenhil.hosts.<host>.npiv")
    for name in per_host:
        if name not in targets:
            raise check.fail(f"xenhil.hosts.{name}",
                             f"no target of that name (targets: {', '.join(targets)})")

    hosts = {}
    for name, target in targets.items():
        where = f"host {name}"
        target = check.mapping(target, f"targets.{name}")
        resources = check.mapping(target.get("resources") or {}, f"targets.{name}.resources")
        drivers = check.mapping(target.get("drivers") or {}, f"targets.{name}.drivers")
        missing = [driver for driver in DRIVERS if driver not in drivers]
        if missing:
            raise check.fail(f"targets.{name}.drivers", f"missing {', '.join(missing)} (every "
                             f"host declares {', '.join(DRIVERS)}; labgrid binds them)")
        if list(drivers).index("XenBootStrategy") < max(
                list(drivers).index(driver) for driver in DRIVERS[:-1]):
            # labgrid creates drivers in file order, and binds each to those before it
            raise check.fail(f"targets.{name}.drivers", "declare XenBootStrategy after "
                             f"{', '.join(DRIVERS[:-1])}: labgrid binds it to them")
        host_options = {**defaults, **check.mapping(per_host.get(name) or {},
                                                    f"xenhil.hosts.{name}")}
        for key in host_options:
            if key not in HOST_OPTIONS:
                raise check.fail(f"{where}: {key}",
                                 f"unknown option (known: {', '.join(sorted(HOST_OPTIONS))})")
            check.get(host_options, key, HOST_OPTIONS[key], where)
        place = _place(check, name, host_options, lab_name)
        hosts[name] = _with_place(check, _host(check, name, resources, host_options,
                                               check_files, place, coordinator),
                                  place, host_options)
    _check_vport_pools_disjoint(check, hosts)
    _check_places_distinct(check, hosts)
    _check_endpoints_distinct(check, hosts, {
        name: next(resource for resource in CONSOLE_RESOURCES
                   if resource in (targets[name].get("resources") or {}))
        for name in hosts})

    reports = check.get(options, "reports", str, "xenhil", "reports")
    reports_dir = check.file(reports, "xenhil.reports", must_exist=False)
    timeouts = check.mapping(options.get("timeouts") or {}, "xenhil.timeouts")
    for key in timeouts:
        if key not in TIMEOUTS:
            raise check.fail(f"xenhil.timeouts.{key}",
                             f"no such timeout (known: {', '.join(sorted(TIMEOUTS))})")
        check.positive(check.get(timeouts, key, (int, float), "xenhil.timeouts"),
                       f"xenhil.timeouts.{key}")
    single = check.get(options, "single_host_scenarios_on", list, "xenhil", [])
    for name in single:
        if not isinstance(name, str) or name not in hosts:
            raise check.fail("xenhil.single_host_scenarios_on",
                             f"no host {name!r} (hosts: {', '.join(hosts)})")
    beside = _check_beside(check, options.get("single_host_scenarios_beside") or {},
                           hosts, single)
    if options.get("default_build") is not None:
        check.variables_set(options["default_build"], "xenhil.default_build")
    if options.get("vlab") is not None:
        _check_vlab(check, options["vlab"], hosts)
    return Lab(
        path=path,
        name=lab_name,
        hosts=hosts,
        reports_dir=reports_dir,
        timeout_factor=check.positive(
            check.get(options, "timeout_factor", (int, float), "xenhil", 1.0),
            "xenhil.timeout_factor"),
        timeout_overrides={key: float(value) for key, value in timeouts.items()},
        options=dict(options),
        single_host_scenarios_on=tuple(single),
        single_host_scenarios_beside=beside,
        local_migrations=int(check.positive(
            check.get(options, "local_migrations", int, "xenhil", 10),
            "xenhil.local_migrations")),
        coordinator=coordinator,
    )


# The labgrid drivers every host declares: power, com1, SSH, and the boot strategy bound
# to the three.
DRIVERS = ("IPMIPowerDriver", "Com1ConsoleDriver", "XenSSHDriver", "XenBootStrategy")


def _host(check: _Checker, name: str, resources: Mapping[str, Any],
          options: Mapping[str, Any], check_files: bool, place: str,
          coordinator: str | None) -> HostSpec:
    where = f"host {name}"
    for needed in ("IPMIPowerPort", "NetworkService"):
        if needed not in resources:
            raise check.fail(f"{where}: resources.{needed}", "missing (every host needs "
                             "IPMIPowerPort, NetworkService and a console)")
    ipmi = check.mapping(resources["IPMIPowerPort"], f"{where}: IPMIPowerPort")
    ipmi_where = f"{where}: IPMIPowerPort"
    password_file = ipmi.get("password_file")
    password_env = ipmi.get("password_env")
    if "password" in ipmi:
        raise check.fail(f"{ipmi_where}.password", "passwords are never written in a lab "
                         "file; use password_file or password_env")
    if (password_file is None) == (password_env is None):
        raise check.fail(ipmi_where, "needs exactly one of password_file or password_env")
    bmc = BMC(
        host=name,
        address=check.address(ipmi, "address", ipmi_where),
        port=check.port(ipmi, "port", ipmi_where, 623),
        username=check.get(ipmi, "username", str, ipmi_where),
        password_file=(check.file(check.get(ipmi, "password_file", str, ipmi_where),
                                  f"{ipmi_where}.password_file", check_files)
                       if password_file is not None else None),
        password_env=(check.get(ipmi, "password_env", str, ipmi_where)
                      if password_env is not None else None),
        interface=check.get(ipmi, "interface", str, ipmi_where, "lanplus"),
        cipher_suite=check.get(ipmi, "cipher_suite", int, ipmi_where, 3),
        password_file_as_written=password_file,
    )
    console = _console(check, where, resources, bmc, check_files,
                       ExportedFrom(name, place, coordinator))
    xen_console = options.get("xen_console", "com1")
    if xen_console not in XEN_CONSOLES:
        raise check.fail(f"{where}: xen_console", f"{xen_console!r} is not one of "
                         f"{', '.join(XEN_CONSOLES)} (the UART the console resource carries)")
    service = check.mapping(resources["NetworkService"], f"{where}: NetworkService")
    ssh_where = f"{where}: NetworkService"
    if "password" in service:
        raise check.fail(f"{ssh_where}.password", "use ssh_key_file, not a password")
    family = options.get("family", "debian")
    if family not in FAMILIES:
        raise check.fail(f"{where}: family", f"{family!r} is not one of {', '.join(FAMILIES)}")
    factor = check.positive(options.get("timeout_factor", 1.0), f"{where}: timeout_factor")
    dom0_mem = options.get("dom0_mem", "1024M,max:1024M")
    if not _DOM0_MEM.fullmatch(dom0_mem):
        raise check.fail(f"{where}: dom0_mem", f"{dom0_mem!r} is not Xen's dom0_mem syntax "
                         "(a comma list of <size>, min:<size>, max:<size>, e.g. "
                         "1024M,max:1024M)")
    cmdline_extra = options.get("xen_cmdline_extra", "")
    if cmdline_extra and not _XEN_CMDLINE.fullmatch(cmdline_extra):
        raise check.fail(f"{where}: xen_cmdline_extra", f"{cmdline_extra!r} is not a list of "
                         f"Xen options ({_XEN_OPTION_CHARACTERS}, separated by blanks)")
    link_address = options.get("link_address")
    if link_address is not None and not _is_address(link_address):
        raise check.fail(f"{where}: link_address",
                         f"{link_address!r} is not an IP address or a DNS name")
    key_file = options.get("ssh_key_file")
    host_key_file = options.get("ssh_host_key_file")
    known_hosts = options.get("ssh_known_hosts")
    if not host_key_file and not known_hosts:
        raise check.fail(where, "nothing to check its SSH host key against: name "
                         "ssh_known_hosts (a known_hosts file; `xenhil lab trust` fills it) or "
                         "ssh_host_key_file (its public key), under xenhil.defaults or "
                         f"xenhil.hosts.{name}; without one, any machine answering on its "
                         "address would be trusted")
    return HostSpec(
        name=name,
        bmc=bmc,
        console=console,
        ssh=SSHEndpoint(
            address=check.address(service, "address", ssh_where),
            port=check.port(service, "port", ssh_where, 22),
            username=check.get(service, "username", str, ssh_where),
            key_file=(check.file(key_file, f"{where}: ssh_key_file", check_files)
                      if key_file else None),
            host_key_file=(check.file(host_key_file, f"{where}: ssh_host_key_file",
                                      check_files) if host_key_file else None),
            # Need not exist yet: `xenhil lab trust` creates it.
            known_hosts_file=(check.file(known_hosts, f"{where}: ssh_known_hosts", False)
                              if known_hosts else None),
        ),
        family=family,
        timeout_factor=factor,
        dom0_mem=dom0_mem,
        xen_cmdline_extra=cmdline_extra,
        xen_console=xen_console,
        link_address=link_address,
        routed_guest_network=_network(check, options, "routed_guest_network", where),
        nat_guest_network=_network(check, options, "nat_guest_network", where),
        npiv=_npiv(check, f"{where}: npiv", options["npiv"]) if "npiv" in options else None,
    )


def _place(check: _Checker, host: str, options: Mapping[str, Any], lab_name: str) -> str:
    """The host's labgrid place: the `place` option, by default <lab name>-<host>."""
    place = options.get("place", f"{lab_name}-{host}")
    if not _NAME.fullmatch(place):
        # It names the local lock file too.
        raise check.fail(f"host {host}: place", f"{place!r} is not a place name (letters, "
                         "digits and ._-, not starting with . or -); set xenhil.name or "
                         f"xenhil.hosts.{host}.place")
    return str(place)


def _with_place(check: _Checker, host: HostSpec, place: str,
                options: Mapping[str, Any]) -> HostSpec:
    """`host` with its labgrid place and the place's tags."""
    where = f"host {host.name}"
    tags = check.mapping(options.get("tags") or {}, f"{where}: tags")
    for key, value in tags.items():
        if not isinstance(key, str) or not _TAG_KEY.fullmatch(key) or key == "name":
            raise check.fail(f"{where}: tags.{key}", "a tag name is a lower-case letter, then "
                             "lower-case letters, digits or _ (and not `name`, which labgrid "
                             "gives every place)")
        if not isinstance(value, str) or not _TAG_VALUE.fullmatch(value):
            # YAML reads yes, no, on and off without quotes as booleans.
            raise check.fail(f"{where}: tags.{key}", f"{value!r} is not a tag value: a word "
                             "of letters, digits and ._-, in quotes (\"yes\", not yes)")
    return replace(host, place=place, tags=dict(tags))


def _check_places_distinct(check: _Checker, hosts: dict[str, HostSpec]) -> None:
    """A place locked for one host would otherwise lock, or free, another."""
    owner: dict[str, str] = {}
    for name, host in hosts.items():
        if host.place in owner:
            raise check.fail(f"host {name}: place", f"{host.place!r} is the place of host "
                             f"{owner[host.place]} too; every host needs its own")
        owner[host.place] = name


@dataclass(frozen=True)
class ExportedFrom:
    """Where a PlaceSerialPort console is looked up: the host's place, on the lab's
    coordinator (None: the lab has none)."""

    host: str
    place: str
    coordinator: str | None


def _console(check: _Checker, where: str, resources: Mapping[str, Any], bmc: BMC,
             check_files: bool, exported_from: ExportedFrom) -> ConsolePort:
    present = [name for name in CONSOLE_RESOURCES if name in resources]
    if not present:
        raise check.fail(f"{where}: resources", "no console: declare one of Com1Port (raw "
                         "TCP), NetworkSerialPort (RFC 2217), RawSerialPort (a serial device "
                         "on this machine), IPMISOLPort (the BMC's Serial-over-LAN) or "
                         "PlaceSerialPort (the one a labgrid-exporter serves for the host's "
                         "place)")
    if len(present) > 1:
        raise check.fail(f"{where}: resources.{present[1]}", f"a second console ({present[0]} "
                         "is one); the recorder reads one console per host")
    resource = present[0]
    resource_where = f"{where}: {resource}"
    data = check.mapping(resources[resource] or {}, resource_where)
    known = CONSOLE_RESOURCES[resource]
    for key in data:
        if key not in known:
            raise check.fail(f"{resource_where}.{key}",
                             f"unknown field (known: {', '.join(known)})")
    speed = check.get(data, "speed", int, resource_where, 115200)
    if speed not in SERIAL_SPEEDS:
        raise check.fail(f"{resource_where}.speed", f"{speed} is not a serial bit rate "
                         f"({', '.join(map(str, SERIAL_SPEEDS))})")
    if resource == "RawSerialPort":
        device = check.get(data, "port", str, resource_where)
        if not device.startswith("/dev/"):
            raise check.fail(f"{resource_where}.port", f"{device!r} is not a serial device "
                             "(/dev/ttyUSB0, /dev/serial/by-id/...)")
        if check_files and not Path(device).exists():
            raise check.fail(f"{resource_where}.port", f"{device} does not exist")
        return SerialDevicePort(device, speed)
    if resource == "IPMISOLPort":
        if bmc.interface != "lanplus":
            raise check.fail(f"{where}: IPMIPowerPort.interface", f"{bmc.interface!r}: "
                             "Serial-over-LAN (IPMISOLPort) needs lanplus (IPMI 2.0)")
        return SOLPort(bmc, speed)
    if resource == "PlaceSerialPort":
        if exported_from.coordinator is None:
            raise check.fail(resource_where, "the console comes from the host's labgrid "
                             "place, and the lab names no coordinator: set "
                             "xenhil.coordinator (HOST:PORT of labgrid-coordinator)")
        name = check.get(data, "resource", str, resource_where, None)
        if name is not None and not _NAME.fullmatch(name):
            raise check.fail(f"{resource_where}.resource", f"{name!r} is not a labgrid "
                             "resource name (letters, digits and ._-)")
        return PlaceSerialPort(exported_from.host, exported_from.place,
                               exported_from.coordinator, speed, name)
    host = check.address(data, "host", resource_where)
    port = check.port(data, "port", resource_where)
    protocol = check.get(data, "protocol", str, resource_where,
                         "rfc2217" if resource == "NetworkSerialPort" else "raw")
    if resource == "NetworkSerialPort" and protocol not in ("rfc2217", "raw"):
        raise check.fail(f"{resource_where}.protocol", f"{protocol!r} is not rfc2217 (telnet "
                         "with serial control, as ser2net's telnet(rfc2217)) or raw")
    return RFC2217Port(host, port, speed) if protocol == "rfc2217" else RawTCPPort(host, port,
                                                                                   speed)


def _network(check: _Checker, options: Mapping[str, Any], key: str,
             where: str) -> ipaddress.IPv4Network | None:
    value = options.get(key)
    if value is None:
        return None
    try:
        return ipaddress.IPv4Network(value)
    except ValueError as error:
        raise check.fail(f"{where}: {key}", f"not an IPv4 network like 203.0.113.0/28: "
                                            f"{error}") from None


def _npiv(check: _Checker, where: str, data: Mapping[str, Any]) -> NpivConfig:
    for key in data:
        if key not in NPIV_FIELDS:
            raise check.fail(f"{where}.{key}", f"unknown field (known: {', '.join(NPIV_FIELDS)})")
    for key in NPIV_FIELDS:
        if data.get(key) is None:
            raise check.fail(f"{where}.{key}", "missing")
    luns = data["luns"]
    if not isinstance(luns, list) or not luns or not all(
            isinstance(lun, int) and not isinstance(lun, bool) and lun >= 0 for lun in luns):
        raise check.fail(f"{where}.luns", f"expected a list of LUN numbers (0, 1, ...), got "
                         f"{luns!r}")
    pool = data["vport_pool"]
    if not isinstance(pool, list) or not pool:
        raise check.fail(f"{where}.vport_pool", "expected a list of vports, each "
                         "{wwpn: ..., wwnn: ...} (wwnn optional)")
    names = []
    for index, entry in enumerate(pool):
        entry_where = f"{where}.vport_pool[{index}]"
        entry = check.mapping(entry, entry_where)
        unknown = set(entry) - {"wwpn", "wwnn"}
        if unknown:
            raise check.fail(f"{entry_where}.{sorted(unknown)[0]}", "unknown field (known: "
                             "wwpn, wwnn)")
        if entry.get("wwpn") is None:
            raise check.fail(f"{entry_where}.wwpn", "missing")
        wwpn = check.wwn(entry["wwpn"], f"{entry_where}.wwpn")
        wwnn = (check.wwn(entry["wwnn"], f"{entry_where}.wwnn") if entry.get("wwnn")
                is not None else default_wwnn(wwpn))
        names.append(VportName(wwpn, wwnn))
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name.wwpn in seen:
            raise check.fail(f"{where}.vport_pool[{index}].wwpn",
                             f"{name.wwpn} is in the pool twice")
        seen.add(name.wwpn)
    return NpivConfig(
        fabric_name=check.wwn(data["fabric_name"], f"{where}.fabric_name"),
        target_wwpn=check.wwn(data["target_wwpn"], f"{where}.target_wwpn"),
        luns=tuple(luns),
        vport_pool=tuple(names),
    )


def _check_beside(check: _Checker, section: object, hosts: Mapping[str, Any],
                  single: list[str]) -> dict[str, tuple[str, ...]]:
    """xenhil.single_host_scenarios_beside: host -> paths of scenarios (files,
    directories or test ids relative to the harness's root) whose one-host tests run on
    that host, beside the single_host_scenarios_on hosts."""
    where = "xenhil.single_host_scenarios_beside"
    beside: dict[str, tuple[str, ...]] = {}
    mapping = check.mapping(section, where)
    if mapping and not single:
        raise check.fail(where, "needs single_host_scenarios_on: the hosts the other "
                                "one-host scenarios run on")
    for name, paths in mapping.items():
        if name not in hosts:
            raise check.fail(f"{where}.{name}", f"no such host (hosts: {', '.join(hosts)})")
        if name in single:
            raise check.fail(f"{where}.{name}", "the host is in single_host_scenarios_on "
                                                "already: it runs every other one-host "
                                                "scenario")
        if not isinstance(paths, list) or not paths:
            raise check.fail(f"{where}.{name}", "expected a list of scenario paths, e.g. "
                                                "[testsuites/networking]")
        for path in paths:
            if not isinstance(path, str) or not path or path.startswith("/") \
                    or ".." in path.split("/"):
                raise check.fail(f"{where}.{name}", f"{path!r} is not a path relative to "
                                                    "the harness's root, e.g. "
                                                    "testsuites/networking")
            if not (data_root() / path.split("::")[0]).exists():
                raise check.fail(f"{where}.{name}", f"no scenarios at {path} (paths are "
                                                    f"relative to {data_root()})")
        beside[name] = tuple(path.rstrip("/") for path in paths)
    return beside


def _check_vlab(check: _Checker, section: Mapping[str, Any], hosts: Mapping[str, Any]) -> None:
    """`xenhil.vlab`: every host a machine index of its own (its MAC addresses, hence
    its name and addresses inside, come from it)."""
    for key in section:
        if key not in VLAB_OPTIONS:
            raise check.fail(f"xenhil.vlab.{key}", f"unknown option (known: "
                             f"{', '.join(sorted(VLAB_OPTIONS))})")
    for key in ("memory_mb", "vcpus"):
        value = check.get(section, key, int, "xenhil.vlab", None)
        if value is not None and value < 1:
            raise check.fail(f"xenhil.vlab.{key}", f"must be a whole number above 0, got {value}")
    keep = check.get(section, "keep_installed", int, "xenhil.vlab", None)
    if keep is not None and keep < 0:
        raise check.fail("xenhil.vlab.keep_installed",
                         f"must be 0 (keep none) or more, got {keep}")
    per_host = check.mapping(check.get(section, "hosts", Mapping, "xenhil.vlab"),
                             "xenhil.vlab.hosts")
    for name in per_host:
        if name not in hosts:
            raise check.fail(f"xenhil.vlab.hosts.{name}",
                             f"no target of that name (targets: {', '.join(hosts)})")
    owner: dict[int, str] = {}
    for name in hosts:
        where = f"xenhil.vlab.hosts.{name}"
        machine = check.mapping(per_host.get(name) or {}, where)
        for key in machine:
            if key != "index":
                raise check.fail(f"{where}.{key}", "unknown option (known: index)")
        index = check.get(machine, "index", int, where)
        if not 1 <= index <= 254:
            raise check.fail(f"{where}.index", f"{index} is not a number from 1 to 254")
        if index in owner:
            raise check.fail(f"{where}.index", f"{index} is the index of host {owner[index]} "
                             "too; every machine needs its own")
        owner[index] = name


def _check_vport_pools_disjoint(check: _Checker, hosts: dict[str, HostSpec]) -> None:
    """Two hosts creating the same WWPN on one fabric would knock each other off it."""
    owner: dict[str, str] = {}
    for name, host in hosts.items():
        for vport in host.npiv.vport_pool if host.npiv else ():
            if vport.wwpn in owner:
                raise check.fail(f"host {name}: npiv.vport_pool",
                                 f"WWPN {vport.wwpn} is in the pool of host {owner[vport.wwpn]} "
                                 "too; every host needs WWPNs of its own")
            owner[vport.wwpn] = name


def _check_endpoints_distinct(check: _Checker, hosts: dict[str, HostSpec],
                              console_resources: dict[str, str]) -> None:
    """Two hosts on one BMC, console or SSH endpoint are one machine under two names:
    power cycling one would power off the other. Compared as the addresses are meant,
    not as written (127.0.0.1 and localhost; YAML reads 0x185e and 6238 as one port)."""
    kinds = (("BMC", lambda name, host: ("IPMIPowerPort",
                                         _network_keys(host.bmc.address, host.bmc.port))),
             ("console", lambda name, host: (console_resources[name],
                                             _console_keys(host.console))),
             ("SSH", lambda name, host: ("NetworkService",
                                         _network_keys(host.ssh.address, host.ssh.port))))
    for what, keys_of in kinds:
        owner: dict[tuple[str, object], tuple[str, str]] = {}
        for name, host in hosts.items():
            resource, (keys, written) = keys_of(name, host)
            for key in keys:
                if key in owner:
                    other, other_written = owner[key]
                    spelled = "" if other_written == written else \
                        f" (written there as {other_written})"
                    raise check.fail(f"host {name}: {resource}",
                                     f"{written} is the {what} of host {other} too{spelled}; "
                                     "every host needs its own")
            owner.update(dict.fromkeys(keys, (name, written)))


def _network_keys(address: str, port: int) -> tuple[set[tuple[str, object]], str]:
    return {(spelling, port) for spelling in _same_machine(address)}, \
        str(Endpoint(address, port))


def _console_keys(console: ConsolePort) -> tuple[set[tuple[str, object]], str]:
    if isinstance(console, RawTCPPort | RFC2217Port):
        return _network_keys(console.host, console.port)
    if isinstance(console, SerialDevicePort):
        return {("device", console.device)}, console.device
    # Serial-over-LAN: one per BMC, checked as the BMC; an exported one: per place, checked
    return set(), console.endpoint


def _same_machine(address: str) -> set[str]:
    """Spellings of the address `address` names (one of them `address` itself, made
    canonical), as far as they are known without asking a resolver."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        name = address.lower().removesuffix(".")
        # RFC 6761: localhost names are loopback; glibc's /etc/hosts has both.
        if name == "localhost" or name.endswith(".localhost"):
            return {name, "127.0.0.1", "::1"}
        return {name}
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:  # Linux connects 0.0.0.0 and :: to the loopback address
        return {ip.compressed, "127.0.0.1" if ip.version == 4 else "::1"}
    return {ip.compressed}
