"""Bad lab files: each mistake is one ConfigError naming file, host and field, raised
quickly and before any process starts (nothing touches a host, no virtual lab)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cli import build_parser
from harness.errors import ConfigError
from harness.lab import DEFAULT_LAB, load_lab

Mutation = Callable[[dict[str, Any]], None]


Getter = Callable[[dict[str, Any]], dict[str, Any]]


def at(*keys: str) -> Getter:
    def get(data: dict[str, Any]) -> dict[str, Any]:
        for key in keys:
            data = data[key]
        return data
    return get


def rename_target(new: object) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        data["targets"] = {new if name == "vlab1" else name: target
                           for name, target in data["targets"].items()}
    return mutate


def set_in(getter: Getter, key: str, value: object) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        getter(data)[key] = value
    return mutate


def delete_in(getter: Getter, key: str) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        del getter(data)[key]
    return mutate


def bmc_passwords_from_env(data: dict[str, Any]) -> None:
    for host in ("vlab1", "vlab2"):
        ipmi = at("targets", host, "resources", "IPMIPowerPort")(data)
        del ipmi["password_file"]
        ipmi["password_env"] = "XENHIL_BMC_PASSWORD"


def same_endpoint(resource: str, address_key: str) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        first, second = (at("targets", host, "resources", resource)(data)
                         for host in ("vlab1", "vlab2"))
        second[address_key] = first[address_key]
    return mutate


def endpoints(resource: str, address_key: str, first: str, second: str) -> Mutation:
    """Both hosts' `resource` at one port, their addresses written `first` and `second`."""
    def mutate(data: dict[str, Any]) -> None:
        for host, address in (("vlab1", first), ("vlab2", second)):
            at("targets", host, "resources", resource)(data)[address_key] = address
    return mutate


def console(resource: str, fields: dict[str, object] | None, host: str = "vlab2") -> Mutation:
    """The host's console as `resource` with `fields`, instead of its Com1Port."""
    def mutate(data: dict[str, Any]) -> None:
        resources = at("targets", host, "resources")(data)
        del resources["Com1Port"]
        resources[resource] = fields
    return mutate


def both(*mutations: Mutation) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(data)
    return mutate


def second_console(data: dict[str, Any]) -> None:
    at("targets", "vlab2", "resources")(data)["IPMISOLPort"] = {}


TOP = at()
XENHIL = at("xenhil")
VLAB = at("xenhil", "vlab")
VLAB_MACHINES = at("xenhil", "vlab", "hosts")
DEFAULTS = at("xenhil", "defaults")
VLAB1 = at("xenhil", "hosts", "vlab1")
VLAB2 = at("xenhil", "hosts", "vlab2")
VLAB1_IPMI = at("targets", "vlab1", "resources", "IPMIPowerPort")
VLAB2_COM1 = at("targets", "vlab2", "resources", "Com1Port")
VLAB1_SSH = at("targets", "vlab1", "resources", "NetworkService")

VALID_HEAD = "targets:\n  vlab1:\n    resources:\n      IPMIPowerPort:\n"
# vlab2's SSH at vlab1's address and port, the port written in hex (YAML reads an int).
SSH_PORT_IN_HEX = DEFAULT_LAB.read_text().replace(
    "address: 127.0.1.2\n        port: 6222", "address: 127.0.1.1\n        port: 0x184e", 1)

# (id, mutation of labs/vlab.yaml's data or raw YAML text, check_files, error fragment)
ROWS: list[tuple[str, Mutation | str, bool, str]] = [
    # Handled before this table existed.
    ("missing resource", delete_in(at("targets", "vlab2", "resources"), "NetworkService"),
     False, "host vlab2: resources.NetworkService: missing"),
    ("missing driver", delete_in(at("targets", "vlab2", "drivers"), "XenBootStrategy"),
     False, "targets.vlab2.drivers: missing XenBootStrategy"),
    ("inline password", set_in(VLAB1_IPMI, "password", "calvin"),
     False, "host vlab1: IPMIPowerPort.password: passwords are never written"),
    ("two password sources", set_in(VLAB1_IPMI, "password_env", "X"),
     False, "host vlab1: IPMIPowerPort: needs exactly one of password_file or password_env"),
    ("port not a number", set_in(VLAB1_SSH, "port", "ssh"),
     False, "host vlab1: NetworkService.port: expected int, got 'ssh'"),
    ("port too high", set_in(VLAB2_COM1, "port", 70000),
     False, "host vlab2: Com1Port.port: 70000 is not a TCP/UDP port"),
    ("port zero", set_in(VLAB1_IPMI, "port", 0),
     False, "host vlab1: IPMIPowerPort.port: 0 is not a TCP/UDP port"),
    ("port a boolean", set_in(VLAB1_SSH, "port", True),
     False, "host vlab1: NetworkService.port: expected int, got True"),
    ("port a float", set_in(VLAB1_SSH, "port", 22.5),
     False, "host vlab1: NetworkService.port: expected int, got 22.5"),
    ("unset variable", set_in(VLAB1, "ssh_key_file", "${XENHIL_TEST_UNSET_VARIABLE}/id"),
     False, "host vlab1: ssh_key_file: refers to ${XENHIL_TEST_UNSET_VARIABLE}, which is not set"),
    ("unknown option", set_in(VLAB1, "dom0_memory", "2G"),
     False, "host vlab1: dom0_memory: unknown option (known:"),
    ("unknown timeout", set_in(XENHIL, "timeouts", {"login": 100}),
     False, "xenhil.timeouts.login: no such timeout"),
    ("missing password file", lambda d: None,
     True, "host vlab1: IPMIPowerPort.password_file: "),
    ("missing key file", bmc_passwords_from_env,
     True, "host vlab1: ssh_key_file: "),
    # Host names.
    ("name with a shell command", rename_target("vlab1;touch /tmp/pwned"),
     False, "targets.vlab1;touch /tmp/pwned: a host name is letters, digits and ._- only"),
    ("name climbing directories", rename_target("../.."),
     False, "targets.../..: a host name is letters, digits and ._- only"),
    ("name like an option", rename_target("-oProxyCommand"),
     False, "targets.-oProxyCommand: a host name is"),
    ("name a number", rename_target(1),
     False, "targets.1: a host name is"),
    # Addresses.
    ("BMC address not an IP", set_in(VLAB1_IPMI, "address", "198.51.100.999"),
     False, "host vlab1: IPMIPowerPort.address: '198.51.100.999' is not an IP address or a DNS"),
    ("BMC address with a command", set_in(VLAB1_IPMI, "address", "bmc;reboot"),
     False, "host vlab1: IPMIPowerPort.address: 'bmc;reboot' is not"),
    ("console host with a space", set_in(VLAB2_COM1, "host", "consoles lab"),
     False, "host vlab2: Com1Port.host: 'consoles lab' is not an IP address or a DNS name"),
    ("SSH address like an option", set_in(VLAB1_SSH, "address", "-oProxyCommand=sh"),
     False, "host vlab1: NetworkService.address: '-oProxyCommand=sh' is not"),
    ("IPv6 scope with a command", set_in(VLAB1_SSH, "address", "fe80::1%eth0;reboot"),
     False, "host vlab1: NetworkService.address: 'fe80::1%eth0;reboot' is not"),
    ("DNS label too long", set_in(VLAB1_SSH, "address", "a" * 64 + ".example"),
     False, "host vlab1: NetworkService.address: 'aaaa"),
    ("link address", set_in(VLAB2, "link_address", "198.51.100.12 && reboot"),
     False, "host vlab2: link_address: '198.51.100.12 && reboot' is not an IP address"),
    # SSH host keys: every host has something to check its key against.
    ("no host key to check against", delete_in(DEFAULTS, "ssh_host_key_file"),
     False, "host vlab1: nothing to check its SSH host key against: name ssh_known_hosts"),
    ("pinned host key empty", set_in(DEFAULTS, "ssh_host_key_file", ""),
     False, "host vlab1: nothing to check its SSH host key against"),
    ("known_hosts with an unset variable",
     set_in(VLAB2, "ssh_known_hosts", "${XENHIL_TEST_UNSET_VARIABLE}/known_hosts"),
     False, "host vlab2: ssh_known_hosts: refers to ${XENHIL_TEST_UNSET_VARIABLE}, which is "
            "not set"),
    ("known_hosts not a path", set_in(VLAB1, "ssh_known_hosts", ["known_hosts"]),
     False, "host vlab1.ssh_known_hosts: expected str, got ['known_hosts']"),
    # Timeout factors and timeouts.
    ("lab factor negative", set_in(XENHIL, "timeout_factor", -1),
     False, "xenhil.timeout_factor: must be a finite number greater than 0, got -1"),
    ("lab factor NaN", set_in(XENHIL, "timeout_factor", float("nan")),
     False, "xenhil.timeout_factor: must be a finite number greater than 0, got nan"),
    ("host factor zero", set_in(VLAB2, "timeout_factor", 0),
     False, "host vlab2: timeout_factor: must be a finite number greater than 0, got 0"),
    ("host factor infinite", set_in(VLAB1, "timeout_factor", float("inf")),
     False, "host vlab1: timeout_factor: must be a finite number greater than 0, got inf"),
    ("timeout negative", set_in(XENHIL, "timeouts", {"host_hang": -5}),
     False, "xenhil.timeouts.host_hang: must be a finite number greater than 0, got -5"),
    # dom0_mem.
    ("dom0_mem a word", set_in(VLAB1, "dom0_mem", "lots"),
     False, "host vlab1: dom0_mem: 'lots' is not Xen's dom0_mem syntax"),
    ("dom0_mem smuggling options", set_in(VLAB2, "dom0_mem", "1024M noreboot"),
     False, "host vlab2: dom0_mem: '1024M noreboot' is not Xen's dom0_mem syntax"),
    ("dom0_mem unknown unit", set_in(VLAB1, "dom0_mem", "max:2X"),
     False, "host vlab1: dom0_mem: 'max:2X' is not"),
    # Guest networks.
    ("routed network host bits", set_in(VLAB1, "routed_guest_network", "203.0.113.5/28"),
     False, "host vlab1: routed_guest_network: not an IPv4 network like 203.0.113.0/28"),
    ("NAT network prefix too long", set_in(VLAB2, "nat_guest_network", "203.0.113.64/33"),
     False, "host vlab2: nat_guest_network: not an IPv4 network like 203.0.113.0/28"),
    ("NAT network IPv6", set_in(VLAB2, "nat_guest_network", "2001:db8::/64"),
     False, "host vlab2: nat_guest_network: not an IPv4 network"),
    # One endpoint, two hosts.
    ("shared BMC", same_endpoint("IPMIPowerPort", "address"),
     False, "host vlab2: IPMIPowerPort: 127.0.1.1:6230 is the BMC of host vlab1 too"),
    ("shared console", same_endpoint("Com1Port", "host"),
     False, "host vlab2: Com1Port: 127.0.1.1:6231 is the console of host vlab1 too"),
    ("shared SSH", same_endpoint("NetworkService", "address"),
     False, "host vlab2: NetworkService: 127.0.1.1:6222 is the SSH of host vlab1 too"),
    # One endpoint, two spellings.
    ("shared BMC as localhost", endpoints("IPMIPowerPort", "address", "127.0.0.1", "localhost"),
     False, "host vlab2: IPMIPowerPort: localhost:6230 is the BMC of host vlab1 too (written "
            "there as 127.0.0.1:6230)"),
    ("shared BMC as IPv4-mapped IPv6",
     endpoints("IPMIPowerPort", "address", "127.0.1.1", "::ffff:127.0.1.1"),
     False, "host vlab2: IPMIPowerPort: [::ffff:127.0.1.1]:6230 is the BMC of host vlab1 too"),
    ("shared console in capitals with a dot",
     endpoints("Com1Port", "host", "consoles.lab.example", "Consoles.LAB.example."),
     False, "host vlab2: Com1Port: Consoles.LAB.example.:6231 is the console of host vlab1 too"),
    ("shared console as 0.0.0.0", endpoints("Com1Port", "host", "127.0.0.1", "0.0.0.0"),
     False, "host vlab2: Com1Port: 0.0.0.0:6231 is the console of host vlab1 too"),
    ("shared SSH port in hex", SSH_PORT_IN_HEX,
     False, "host vlab2: NetworkService: 127.0.1.1:6222 is the SSH of host vlab1 too"),
    # The Xen command line.
    ("cmdline with a command", set_in(VLAB1, "xen_cmdline_extra", "watchdog; reboot"),
     False, "host vlab1: xen_cmdline_extra: 'watchdog; reboot' is not a list of Xen options"),
    ("cmdline with a substitution", set_in(VLAB2, "xen_cmdline_extra", "loglvl=$(reboot)"),
     False, "host vlab2: xen_cmdline_extra: 'loglvl=$(reboot)' is not"),
    ("cmdline with a new line", set_in(VLAB1, "xen_cmdline_extra", "sync_console\n}\nmenuentry"),
     False, "host vlab1: xen_cmdline_extra: 'sync_console\\n}\\nmenuentry' is not"),
    ("cmdline with quotes", set_in(VLAB1, "xen_cmdline_extra", 'iommu="off"'),
     False, "host vlab1: xen_cmdline_extra: 'iommu=\"off\"' is not"),
    # The xenhil section.
    ("unknown lab option", set_in(XENHIL, "timeout", 3),
     False, "xenhil.timeout: unknown option (known: coordinator, default_build, defaults,"),
    ("lab option of the wrong type", set_in(XENHIL, "reports", ["../reports"]),
     False, "xenhil.reports: expected str, got ['../reports']"),
    ("default build with an unset variable",
     set_in(XENHIL, "default_build", "${XENHIL_TEST_UNSET_VARIABLE}/xen"),
     False, "xenhil.default_build: refers to ${XENHIL_TEST_UNSET_VARIABLE}, which is not set"),
    ("single-host scenarios on a list", set_in(XENHIL, "single_host_scenarios_on", [["vlab1"]]),
     False, "xenhil.single_host_scenarios_on: no host ['vlab1']"),
    ("unknown vlab option", set_in(VLAB, "memory", 2048),
     False, "xenhil.vlab.memory: unknown option (known: hosts, keep_installed, memory_mb, "
            "vcpus)"),
    ("kept builds below 0", set_in(VLAB, "keep_installed", -1),
     False, "xenhil.vlab.keep_installed: must be 0 (keep none) or more, got -1"),
    ("vlab memory a string", set_in(VLAB, "memory_mb", "2G"),
     False, "xenhil.vlab.memory_mb: expected int, got '2G'"),
    ("vlab without vCPUs", set_in(VLAB, "vcpus", 0),
     False, "xenhil.vlab.vcpus: must be a whole number above 0, got 0"),
    ("vlab machine unknown", set_in(VLAB_MACHINES, "vlab3", {"index": 3}),
     False, "xenhil.vlab.hosts.vlab3: no target of that name"),
    ("vlab machine missing", delete_in(VLAB_MACHINES, "vlab2"),
     False, "xenhil.vlab.hosts.vlab2.index: missing"),
    ("vlab index too high", set_in(at("xenhil", "vlab", "hosts", "vlab1"), "index", 255),
     False, "xenhil.vlab.hosts.vlab1.index: 255 is not a number from 1 to 254"),
    ("vlab index shared", set_in(at("xenhil", "vlab", "hosts", "vlab2"), "index", 1),
     False, "xenhil.vlab.hosts.vlab2.index: 1 is the index of host vlab1 too"),
    ("vlab machine option unknown", set_in(at("xenhil", "vlab", "hosts", "vlab2"), "mac", "x"),
     False, "xenhil.vlab.hosts.vlab2.mac: unknown option (known: index)"),
    # The coordinator, places and their tags.
    ("coordinator with a space", set_in(XENHIL, "coordinator", "coord lab:20408"),
     False, "xenhil.coordinator: 'coord lab:20408' is not HOST or HOST:PORT of a labgrid"),
    ("coordinator port a word", set_in(XENHIL, "coordinator", "coord.lab.example:grpc"),
     False, "xenhil.coordinator: 'coord.lab.example:grpc': 'grpc' is not a TCP port"),
    ("coordinator a list", set_in(XENHIL, "coordinator", ["coord:20408"]),
     False, "xenhil.coordinator: expected str, got ['coord:20408']"),
    ("place shared", set_in(VLAB2, "place", "vlab-vlab1"),
     False, "host vlab2: place: 'vlab-vlab1' is the place of host vlab1 too"),
    ("place for every host", set_in(at("xenhil", "defaults"), "place", "rack-3"),
     False, "host vlab2: place: 'rack-3' is the place of host vlab1 too"),
    ("place climbing directories", set_in(VLAB1, "place", "../vlab1"),
     False, "host vlab1: place: '../vlab1' is not a place name"),
    ("lab name making a bad place", set_in(XENHIL, "name", "my lab"),
     False, "host vlab1: place: 'my lab-vlab1' is not a place name"),
    ("tags a list", set_in(VLAB1, "tags", ["npiv=yes"]),
     False, "host vlab1.tags: expected Mapping, got ['npiv=yes']"),
    ("tag value unquoted yes", set_in(VLAB1, "tags", {"npiv": True}),
     False, "host vlab1: tags.npiv: True is not a tag value: a word of letters, digits and "
            "._-, in quotes"),
    ("tag value with a space", set_in(VLAB2, "tags", {"cpu": "amd epyc"}),
     False, "host vlab2: tags.cpu: 'amd epyc' is not a tag value"),
    ("tag name in capitals", set_in(VLAB1, "tags", {"NPIV": "yes"}),
     False, "host vlab1: tags.NPIV: a tag name is a lower-case letter, then"),
    ("tag name of one letter", set_in(VLAB1, "tags", {"a": "yes"}),
     False, "host vlab1: tags.a: a tag name is"),
    ("tag called name", set_in(VLAB1, "tags", {"name": "big"}),
     False, "host vlab1: tags.name: a tag name is"),
    # Consoles: one per host, each field checked.
    ("no console", delete_in(at("targets", "vlab2", "resources"), "Com1Port"),
     False, "host vlab2: resources: no console: declare one of Com1Port (raw TCP), "
            "NetworkSerialPort (RFC 2217), RawSerialPort"),
    ("two consoles", second_console,
     False, "host vlab2: resources.IPMISOLPort: a second console (Com1Port is one)"),
    ("console field unknown", set_in(VLAB2_COM1, "baud", 115200),
     False, "host vlab2: Com1Port.baud: unknown field (known: host, port, speed)"),
    ("console speed not a bit rate", set_in(VLAB2_COM1, "speed", 11520),
     False, "host vlab2: Com1Port.speed: 11520 is not a serial bit rate (1200, 2400"),
    ("console speed as text", set_in(VLAB2_COM1, "speed", "115200"),
     False, "host vlab2: Com1Port.speed: expected int, got '115200'"),
    ("rfc2217 without a port", console("NetworkSerialPort", {"host": "127.0.1.2"}),
     False, "host vlab2: NetworkSerialPort.port: missing"),
    ("rfc2217 bad host", console("NetworkSerialPort", {"host": "con sole", "port": 7001}),
     False, "host vlab2: NetworkSerialPort.host: 'con sole' is not an IP address or a DNS"),
    ("network console protocol", console("NetworkSerialPort",
                                         {"host": "127.0.1.2", "port": 7001, "protocol": "ssh"}),
     False, "host vlab2: NetworkSerialPort.protocol: 'ssh' is not rfc2217 (telnet"),
    ("network console labgrid field", console("NetworkSerialPort",
                                              {"host": "127.0.1.2", "port": 7001, "extra": {}}),
     False, "host vlab2: NetworkSerialPort.extra: unknown field (known: host, port, speed, "
            "protocol)"),
    ("serial device missing port", console("RawSerialPort", {"speed": 115200}),
     False, "host vlab2: RawSerialPort.port: missing"),
    ("serial device not in /dev", console("RawSerialPort", {"port": "ttyUSB0"}),
     False, "host vlab2: RawSerialPort.port: 'ttyUSB0' is not a serial device (/dev/ttyUSB0"),
    ("serial device absent", both(
        bmc_passwords_from_env, delete_in(at("xenhil", "defaults"), "ssh_key_file"),
        delete_in(at("xenhil", "defaults"), "ssh_host_key_file"),
        set_in(at("xenhil", "defaults"), "ssh_known_hosts", "known_hosts"),
        console("RawSerialPort", {"port": "/dev/ttyUSB-xenhil-none"})),
     True, "host vlab2: RawSerialPort.port: /dev/ttyUSB-xenhil-none does not exist"),
    ("sol field unknown", console("IPMISOLPort", {"instance": 2}),
     False, "host vlab2: IPMISOLPort.instance: unknown field (known: speed)"),
    ("sol without lanplus", both(
        console("IPMISOLPort", None),
        set_in(at("targets", "vlab2", "resources", "IPMIPowerPort"), "interface", "lan")),
     False, "host vlab2: IPMIPowerPort.interface: 'lan': Serial-over-LAN (IPMISOLPort) needs "
            "lanplus"),
    ("exported console without a coordinator", console("PlaceSerialPort", {}),
     False, "host vlab2: PlaceSerialPort: the console comes from the host's labgrid place, "
            "and the lab names no coordinator: set xenhil.coordinator"),
    ("exported console field unknown", both(
        set_in(XENHIL, "coordinator", "127.0.0.1"),
        console("PlaceSerialPort", {"place": "rack3-r640-01"})),
     False, "host vlab2: PlaceSerialPort.place: unknown field (known: speed, resource)"),
    ("exported console resource not a name", both(
        set_in(XENHIL, "coordinator", "127.0.0.1"),
        console("PlaceSerialPort", {"resource": "com 1"})),
     False, "host vlab2: PlaceSerialPort.resource: 'com 1' is not a labgrid resource name"),
    ("xen console not a uart", set_in(VLAB2, "xen_console", "ttyS1"),
     False, "host vlab2: xen_console: 'ttyS1' is not one of com1, com2"),
    ("shared rfc2217 console", both(
        console("NetworkSerialPort", {"host": "127.0.0.1", "port": 7001}, "vlab1"),
        console("NetworkSerialPort", {"host": "localhost", "port": 7001})),
     False, "host vlab2: NetworkSerialPort: localhost:7001 is the console of host vlab1 too "
            "(written there as 127.0.0.1:7001)"),
    ("shared serial device", both(console("RawSerialPort", {"port": "/dev/ttyS0"}, "vlab1"),
                                  console("RawSerialPort", {"port": "/dev/ttyS0"})),
     False, "host vlab2: RawSerialPort: /dev/ttyS0 is the console of host vlab1 too"),
    # Keys of the file.
    ("imports", set_in(TOP, "imports", ["evil.py"]),
     False, "imports: unknown top-level key (allowed: targets, xenhil)"),
    ("tools", set_in(TOP, "tools", {"ssh": "/tmp/evil"}),
     False, "tools: unknown top-level key (allowed: targets, xenhil)"),
    ("duplicate key", VALID_HEAD + "        port: 623\n        port: 624\n",
     False, "line 6: duplicate key 'port' (first on line 5)"),
    ("duplicate target", "targets:\n  vlab1: {}\n  vlab1: {}\n",
     False, "line 3: duplicate key 'vlab1' (first on line 2)"),
    ("duplicate top-level key", "xenhil: {}\ntargets: {}\nxenhil: {}\n",
     False, "line 3: duplicate key 'xenhil' (first on line 1)"),
    ("syntax error", "targets:\n  vlab1: [unclosed\n",
     False, "not valid YAML"),
]


@pytest.fixture
def no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"lab validation started a process: {args}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(os, "fork", refuse)
    monkeypatch.setattr(os, "posix_spawn", refuse)


def children() -> set[str]:
    """This process's child processes, from each of its threads' list."""
    found: set[str] = set()
    for task in os.listdir("/proc/self/task"):
        try:
            found |= set(Path(f"/proc/self/task/{task}/children").read_text().split())
        except FileNotFoundError:  # a thread that ended since the listing
            continue
    return found


@pytest.mark.parametrize(("mutation", "check_files", "fragment"),
                         [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_bad_lab_file_is_one_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_processes: None,
        mutation: Mutation | str, check_files: bool, fragment: str) -> None:
    monkeypatch.setenv("XENHIL_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("XENHIL_TEST_UNSET_VARIABLE", raising=False)
    path = tmp_path / "lab.yaml"
    if isinstance(mutation, str):
        path.write_text(mutation)
    else:
        data = yaml.safe_load(DEFAULT_LAB.read_text())
        mutation(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    threads, processes = set(os.listdir("/proc/self/task")), children()

    start = time.monotonic()
    with pytest.raises(ConfigError) as error:
        load_lab(path, check_files=check_files)
    elapsed = time.monotonic() - start

    message = str(error.value)
    assert message.startswith(f"{path}: "), message
    assert message.count(str(path)) == 1, f"more than one error in: {message}"
    assert fragment in message, message
    assert elapsed < 1.0
    # Threads other tests left behind may end meanwhile; none may begin.
    assert set(os.listdir("/proc/self/task")) <= threads
    assert children() <= processes


def test_the_table_covers_every_rule() -> None:
    assert len(ROWS) >= 25
    assert len({row[0] for row in ROWS}) == len(ROWS)


@pytest.mark.parametrize(("getter", "key", "value"), [
    (VLAB1, "dom0_mem", "min:512M,max:2G"),
    (VLAB1, "dom0_mem", "2048"),
    (VLAB1, "dom0_mem", "-1G"),
    (VLAB1, "dom0_mem", "1G+25%,max:8g"),
    (VLAB1_IPMI, "address", "bmc-01.lab.example"),
    (VLAB1_IPMI, "address", "bmc-01.lab.example."),
    (VLAB1_SSH, "address", "::1"),
    (VLAB2, "link_address", "2001:db8::12"),
    (XENHIL, "timeout_factor", 0.5),
    (VLAB1, "xen_cmdline_extra", "watchdog iommu=no-igfx,verbose conring_size=4M "
                                 "dbgp=ehci@pci0000:00:1d.0 loglvl=all/all"),
    (VLAB, "vcpus", 2),
    (VLAB2, "ssh_known_hosts", "lab.known_hosts"),
    (XENHIL, "coordinator", "[::1]:20408"),
    (XENHIL, "coordinator", "coordinator.lab.example"),
    (VLAB1, "tags", {"npiv": "yes", "cpu_vendor": "AMD", "memory_gb": "512"}),
    (VLAB2, "place", "rack3-slot12"),
], ids=lambda value: re.sub(r"\W", "_", str(value)) if isinstance(value, str) else None)
def test_valid_values_load(tmp_path: Path, getter: Getter, key: str, value: object) -> None:
    data = yaml.safe_load(DEFAULT_LAB.read_text())
    getter(data)[key] = value
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    load_lab(path, check_files=False)


def test_a_known_hosts_file_alone_will_do_and_need_not_exist_yet(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XENHIL_CACHE", str(tmp_path))
    (tmp_path / "vlab" / "keys").mkdir(parents=True)
    for name in ("bmc-password", "keys/id_ed25519"):
        (tmp_path / "vlab" / name).write_text("x\n")
    data = yaml.safe_load(DEFAULT_LAB.read_text())
    del data["xenhil"]["defaults"]["ssh_host_key_file"]
    data["xenhil"]["defaults"]["ssh_known_hosts"] = "keys/lab.known_hosts"
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    ssh = load_lab(path, check_files=True).host("vlab2").ssh
    assert (ssh.known_hosts_file, ssh.host_key_file) == (tmp_path / "keys/lab.known_hosts", None)


def test_yaml_merge_keys_may_override(tmp_path: Path) -> None:
    text = DEFAULT_LAB.read_text().replace(
        "  vlab1:\n    resources:", "  vlab1: &vlab1\n    resources:", 1)
    text = text.replace("xenhil:\n", "  vlab3:\n    <<: *vlab1\n    resources:\n"
                        "      IPMIPowerPort: {address: 127.0.1.3, username: admin,"
                        " password_env: X}\n      Com1Port: {host: 127.0.1.3, port: 6231}\n"
                        "      NetworkService: {address: 127.0.1.3, username: root}\n"
                        "xenhil:\n", 1)
    text = text.replace("      vlab2: {index: 2}\n",
                        "      vlab2: {index: 2}\n      vlab3: {index: 3}\n", 1)
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    assert load_lab(path, check_files=False).host("vlab3").bmc.address == "127.0.1.3"


@pytest.mark.parametrize("arguments, expected", [
    ({"hosts": ["vlab9"]}, "unknown host 'vlab9'"),
    ({"build": "/nonexistent/xen-build"}, "/nonexistent/xen-build"),
    ({"profile": "nightlyy"}, "unknown profile 'nightlyy'"),
    ({"tests": ["testsuites/boot/test_bot.py::test_xen_daemons_active"]},
     "test 'testsuites/boot/test_bot.py::test_xen_daemons_active': no file"),
])
def test_run_arguments_are_checked_before_the_virtual_lab_starts(
        monkeypatch: pytest.MonkeyPatch, arguments: dict[str, Any], expected: str) -> None:
    from harness import runner

    def must_not_start(*args: object) -> bool:
        raise AssertionError("the virtual lab was started before the arguments were checked")

    monkeypatch.setattr(runner, "_start_vlab", must_not_start)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        runner.run(DEFAULT_LAB, **arguments)


def test_run_takes_a_profile_or_tests_not_both() -> None:
    from harness.cli import build_parser

    args = build_parser().parse_args(["run", "--profile", "boot", "--test",
                                      "testsuites/boot/test_boot.py"])
    with pytest.raises(ConfigError, match="give --profile or --test, not both"):
        args.func(args)


def test_xenhil_lab_names_the_lab_file_when_none_is_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = yaml.safe_load(DEFAULT_LAB.read_text())
    data["xenhil"]["name"] = "other"
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("XENHIL_LAB", str(path))
    assert load_lab(check_files=False).name == "other"
    assert build_parser().parse_args(["vlab", "status"]).lab == path
    assert load_lab(DEFAULT_LAB, check_files=False).name == "vlab"  # --lab still wins
