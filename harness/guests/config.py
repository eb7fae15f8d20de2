"""A test guest's xl config and its place on the network: names, MACs and addresses
handed out per run, the bridge's network, and the lab's routed and NAT guest networks.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigError, InfrastructureError
from ..host import Host
from .dom0 import CONSOLE_LOG_DIR

BRIDGE = "xenbr0"
ROUTE_NETDEV = "eth0"  # vif-route's and vif-nat's default `netdev`
MAC_PREFIX = "00:16:3e"  # Xen's OUI; the other three bytes: a per-run base + a counter
FIRST_HOST, LAST_HOST = 101, 250  # guest addresses: these host numbers of the network
DEFAULT_MEMORY_MB = 128
# Every guest the harness makes is named so; a killed run's leftovers are found by it.
GUEST_NAME_PREFIX = "xenhil-"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")

# How a guest's vif reaches the world: the hotplug script dom0 runs for it.
NETWORK_SCRIPTS = {"bridge": "vif-bridge", "route": "vif-route", "nat": "vif-nat"}
# PV and PVH boot the test guest's kernel directly; HVM through its emulated firmware
# (hvmloader, SeaBIOS), which the device model (QEMU in dom0) loads the kernel into.
GUEST_TYPES = ("pv", "pvh", "hvm")


@dataclass(frozen=True)
class GuestConfig:
    """What the xl config of a test guest says."""

    name: str
    kernel: str  # paths on dom0
    ramdisk: str
    address: str  # the guest's eth0, with prefix length: 198.51.100.101/24
    mac: str
    memory_mb: int = DEFAULT_MEMORY_MB
    vcpus: int = 1
    bridge: str = BRIDGE
    type: str = "pv"
    network: str = "bridge"  # a key of NETWORK_SCRIPTS
    gateway: str | None = None  # the guest's default route (routed and NAT guests)
    disks: tuple[str, ...] = ()  # xl disk specs (xl-disk-configuration(5)), in order

    def __post_init__(self) -> None:
        if not NAME.fullmatch(self.name):
            raise ValueError(f"bad guest name {self.name!r}: letters, digits, '_', '.', "
                             "'-', at most 63")
        if self.type not in GUEST_TYPES:
            raise ValueError(f"guest type {self.type!r}: the test guest boots as "
                             f"{' or '.join(GUEST_TYPES)}")
        if self.network not in NETWORK_SCRIPTS:
            raise ValueError(f"guest network {self.network!r}: one of "
                             f"{', '.join(NETWORK_SCRIPTS)}")

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]

    @property
    def console(self) -> str:
        """The guest kernel's console: Xen's PV console, or HVM's emulated serial port."""
        return "ttyS0" if self.type == "hvm" else "hvc0"

    @property
    def console_log(self) -> str:
        """Where dom0 keeps the guest's console: xenconsoled's log of the PV console,
        or the device model's file of the emulated serial port."""
        if self.type == "hvm":
            return f"{CONSOLE_LOG_DIR}/hvm-{self.name}.log"
        return f"{CONSOLE_LOG_DIR}/guest-{self.name}.log"

    @property
    def extra(self) -> str:
        """The guest kernel's command line: console, and what the guest's /init reads."""
        # HVM: each byte on an emulated UART traps into the device model (the kernel's
        # info messages took 20 s of a boot under TCG): warnings and worse (panics too)
        # still show, and /init's lines follow. Each port I/O does too: pci=noearly
        # skips the early AGP aperture scans, which read the config space of every
        # possible PCI function twice (32 s of a boot under TCG).
        emulated = " loglevel=4 pci=noearly" if self.type == "hvm" else ""
        extra = (f"console={self.console}{emulated} xenhil.name={self.name} "
                 f"xenhil.ip={self.address}")
        return extra + (f" xenhil.gw={self.gateway}" if self.gateway else "")

    @property
    def vif(self) -> str:
        if self.network == "bridge":
            return f"mac={self.mac},bridge={self.bridge}"
        # the routing scripts take the guest's address from the vif's ip= key
        return f"mac={self.mac},script={NETWORK_SCRIPTS[self.network]},ip={self.ip}"

    def render(self) -> str:
        """The xl config file (xl.cfg(5))."""
        return (
            f"# xen-hil test guest (harness/guests)\n"
            f'name = "{self.name}"\n'
            f'type = "{self.type}"\n'
            f'kernel = "{self.kernel}"\n'
            f'ramdisk = "{self.ramdisk}"\n'
            f'extra = "{self.extra}"\n'
            f"memory = {self.memory_mb}\n"
            f"vcpus = {self.vcpus}\n"
            f'vif = [ "{self.vif}" ]\n'
            f"{self._disk_line()}"
            f"{self._device_model_lines()}"
            # a crashed guest stays for inspection; the harness destroys it
            f'on_crash = "preserve"\n'
        )

    def _device_model_lines(self) -> str:
        """HVM: the serial port into a file, and no display (nothing would look at it)."""
        if self.type != "hvm":
            return ""
        return f'serial = "file:{self.console_log}"\nvga = "none"\nvnc = 0\n'

    def _disk_line(self) -> str:
        if not self.disks:
            return ""
        return "disk = [ " + ", ".join(f'"{disk}"' for disk in self.disks) + " ]\n"


def guest_mac(base: int, index: int) -> str:
    """The MAC of a run's `index`th guest: 00:16:3e, then (`base` + `index`) mod 2^24."""
    tail = ((base + index) % (1 << 24)).to_bytes(3, "big")
    return MAC_PREFIX + "".join(f":{byte:02x}" for byte in tail)


def guest_address(network: ipaddress.IPv4Network, index: int) -> ipaddress.IPv4Interface:
    """The address of a run's `index`th guest on `network`, in turn. On a bridge's
    network (shared with the dom0s) guests take host numbers FIRST_HOST..LAST_HOST; a
    network of the guests alone (routed, NAT) is theirs from its first host number."""
    if network.num_addresses >= LAST_HOST + 2:
        first, count = FIRST_HOST, LAST_HOST - FIRST_HOST + 1
    elif network.num_addresses >= 4:
        first, count = 1, network.num_addresses - 2
    else:
        raise InfrastructureError(f"guest network {network} is too small for guests")
    address = network.network_address + first + index % count
    return ipaddress.IPv4Interface(f"{address}/{network.prefixlen}")


def bridge_network(ip_addr_output: str) -> ipaddress.IPv4Network | None:
    """The IPv4 network of the first address in `ip -o -4 addr show dev BRIDGE`."""
    match = re.search(r"\binet (\d+\.\d+\.\d+\.\d+/\d+)", ip_addr_output)
    return ipaddress.IPv4Interface(match.group(1)).network if match else None



class GuestAddresses:
    """Hands out MACs and addresses for the guests of one run: unique within the run,
    and, through a random MAC base, between runs. A run of several pytest sessions
    (harness.sessions) gives each a `slot` of `slots`: its guests take every
    `slots`th index from `slot`, so that guests of sessions side by side never share
    an address on the bridge the hosts share, and a later session reuses none."""

    def __init__(self, base: int | None = None, slot: int = 0, slots: int = 1) -> None:
        if not 0 <= slot < slots:
            raise ValueError(f"guest address slot {slot} is not one of 0..{slots - 1}")
        self.base = secrets.randbits(24) if base is None else base
        self.slot, self.slots = slot, slots
        self.count = 0

    def next(self, network: ipaddress.IPv4Network) -> tuple[str, str]:
        index = self.slot + self.count * self.slots
        self.count += 1
        return guest_mac(self.base, index), str(guest_address(network, index))


def guest_name(name: str) -> str:
    """`name` with GUEST_NAME_PREFIX, unless it has it."""
    return name if name.startswith(GUEST_NAME_PREFIX) else GUEST_NAME_PREFIX + name


# The lab file's option naming a host's network for its routed or NAT guests.
GUEST_NETWORK_OPTIONS = {"route": "routed_guest_network", "nat": "nat_guest_network"}


# A test's way to that network: the network, or a skip naming the missing option.
NetworkOrSkip = Callable[[Host, str], str]


def lab_guest_network(host: Host, network: str) -> ipaddress.IPv4Network | None:
    """What the lab file gives `host`'s routed or NAT guests, if anything."""
    value: ipaddress.IPv4Network | None = getattr(host.spec, GUEST_NETWORK_OPTIONS[network])
    return value


def guest_network(host: Host, network: str) -> ipaddress.IPv4Network:
    """The lab's network for `host`'s routed or NAT guests."""
    key = GUEST_NETWORK_OPTIONS[network]
    value = lab_guest_network(host, network)
    if value is None:
        raise ConfigError(f"{host.lab.path}: host {host.name}: no {key}: {network} "
                          "guests need addresses of their own (e.g. 203.0.113.0/28)")
    return value


def route_gateway(host: Host) -> str:
    """Where a routed guest sends its traffic: vif-route gives the vif the address of
    dom0's `netdev` (eth0 unless the script is told otherwise)."""
    output = host.run(f"ip -o -4 addr show dev {ROUTE_NETDEV}", check=False).stdout
    match = re.search(r"\binet (\d+\.\d+\.\d+\.\d+)/", output)
    if match is None:
        raise InfrastructureError(f"{host.name}: vif-route gives routed guests the address "
                                  f"of dom0's {ROUTE_NETDEV}, and it has none")
    return match.group(1)


def nat_router(address: str) -> str:
    """The vif's address vif-nat assigns in dom0: the guest's, last byte + 127."""
    ip = ipaddress.IPv4Interface(address).ip
    if ip.packed[-1] + 127 > 254:
        raise ValueError(f"NAT guest address {ip}: vif-nat's router would be past .254")
    return str(ip + 127)

