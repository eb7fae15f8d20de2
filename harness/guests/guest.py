"""Guests on a host: create, the wait until really up, shutdown, destroy.

A guest is the harness's test guest (image.py) as a PV, PVH or HVM domain: kernel and
initramfs copied to dom0 once (dom0.py), an xl config per guest (config.py), one vif on
the guest bridge (xenbr0) with a MAC in Xen's 00:16:3e range, and an address of the
bridge's network given on the kernel command line. "Up" means: the guest printed its
ready marker on its console and answers SSH (through dom0, shell.py). The console is
read from a file on dom0, so the whole console of every guest is kept, from its first
line: xenconsoled's log of the PV console (`--log=guest`, set up on the host when
missing), or for HVM the device model's file of the emulated serial port. An HVM guest's
network is its vif through PV drivers (netfront unplugs the emulated NIC).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import shlex
import time
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import paramiko

from .. import evidence
from ..errors import InfrastructureError, ProductFailure
from ..health import HostBroken
from ..host import Host
from ..leaks import LeakCheck
from ..network import PingStats, parse_ping
from ..remote import CommandResult
from ..side_by_side import leave_unfinished_alone, on_each_host, side_by_side
from ..xenlogs import log_tails
from ..xl import parse_xl_list
from ..xl_command import run_xl
from .config import (
    BRIDGE,
    DEFAULT_MEMORY_MB,
    GuestAddresses,
    GuestConfig,
    bridge_network,
    guest_name,
    guest_network,
    nat_router,
    route_gateway,
)
from .dom0 import (
    GUEST_FILES_DIR,
    ensure_console_logging,
    remote_size,
    upload_guest_files,
)
from .image import ERROR_MARKER, READY_MARKER, GuestImage
from .shell import GuestShell

log = logging.getLogger(__name__)

CONFIG_DIR = "/etc/xen/xenhil"
CONSOLE_READ_LIMIT = 1024 * 1024  # bytes of a guest console read at most: its end
# Seen on a guest's console while it boots: give up at once, it will not come up.
CONSOLE_FAILURES = ("Kernel panic - not syncing", ERROR_MARKER)
PING_OUTPUT_SEPARATOR = "== xenhil ping output =="  # before each of Guest.pings' outputs


class GuestFailed(ProductFailure):
    """A guest did not do what Xen promises: come up, shut down, go away."""


def console_failure(console: str) -> str | None:
    """The line of a guest console that says it will not come up, if any."""
    for line in console.splitlines():
        if any(sign in line for sign in CONSOLE_FAILURES):
            return line.strip()
    return None


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def xl_command(*words: str) -> str:
    """`xl WORDS...` for dom0's shell, each word quoted (guest names are values)."""
    return shlex.join(["xl", *words])


def gone_command(name: str, seconds: float) -> str:
    """Ends once `xl list` no longer shows domain `name` (exit 0), or `seconds` later
    (exit 124). Between looks it sleeps on Xen's @releaseDomain watch (a domain was
    destroyed), at most 2 s: each look is an xl run, about 0.4 s of a TCG dom0's one
    CPU, which the domain's teardown needs as well (polled over SSH once a second, the
    looks took 1.4-3.2 s each during a teardown of about 7 s)."""
    # xenstore-watch sees the watch fire once when it is set; -n 2 waits for one more
    look = (f"while xl list {shlex.quote(name)} >/dev/null 2>&1; do "
            "timeout 2 xenstore-watch -n 2 @releaseDomain >/dev/null 2>&1 "
            "|| [ $? -eq 124 ] || sleep 1; done")  # no xenstore-watch: still no busy loop
    return f"timeout {max(1, round(seconds))} sh -c {shlex.quote(look)}"


def write_config_command(path: str, text: str) -> str:
    """Write `text` to the xl config `path` on dom0, making its directory."""
    return (f"mkdir -p {shlex.quote(str(Path(path).parent))} && "
            f"printf '%s' {shlex.quote(text)} > {shlex.quote(path)}")

class Guest:
    """A test guest on a host. `run` executes commands in it; everything done to it
    (xl commands on dom0, commands inside) lands in the host's transcripts."""

    def __init__(self, config: GuestConfig, host: Host, image: GuestImage) -> None:
        self.config = config
        self.name = config.name
        self.host = host
        self.image = image
        self.ip = config.ip
        self.mac = config.mac
        self.shell = GuestShell(config.name, config.ip, host, image.host_key)
        self.console_path = config.console_log
        self.console_offset = 0  # where this guest's console starts in the log file
        self.console_end: int | None = None  # where it ends: a later guest of its name
        self.created_seconds: float | None = None  # `xl create` took
        self.ready_seconds: float | None = None  # xl create -> ready marker on console
        self.up_seconds: float | None = None  # xl create -> SSH answering

    def __repr__(self) -> str:
        return f"<Guest {self.name} on {self.host.name} {self.ip}>"

    @property
    def config_path(self) -> str:
        return f"{CONFIG_DIR}/{self.name}.cfg"

    @property
    def boot_timeout(self) -> float:
        return self.host.timeouts["hvm_guest_boot" if self.config.type == "hvm"
                                  else "guest_boot"]

    @property
    def creation_deadline(self) -> float:
        """What `create` may take at most: `xl create`, the boot, and a few commands."""
        timeouts = self.host.timeouts
        return timeouts["xl_create"] + self.boot_timeout + 4 * timeouts["command"]

    @evidence.action("create guest {self.name} on {self.host.name}")
    def create(self) -> None:
        """Write the xl config, `xl create` it, and wait until the guest is up."""
        host = self.host
        host.run(write_config_command(self.config_path, self.config.render()))
        # xenconsoled appends to the log of an earlier guest of the same name
        self.console_offset = self.console_size_on(host)
        started = time.monotonic()
        try:
            self._xl(xl_command("create", self.config_path), "xl_create", "was not created")
        except GuestFailed as failure:
            raise GuestFailed(f"{failure}\n{self.hotplug_log()}") from None
        self.created_seconds = time.monotonic() - started
        self.wait_until_up(started)
        log.info("%s: guest %s up: xl create %.1f s, ready marker after %.1f s, SSH after "
                 "%.1f s", host.name, self.name, self.created_seconds, self.ready_seconds or 0,
                 self.up_seconds or 0)

    def wait_until_up(self, since: float) -> None:
        """Until the ready marker is on the console and SSH answers; fails at once on
        a guest console failure or a host crash on com1."""

        def up() -> bool:
            console = self.console_log()
            failure = console_failure(console)
            if failure is not None:
                raise GuestFailed(f"{self.host.name}: guest {self.name} failed to boot: "
                                  f"{failure}\n{tail(console)}")
            if READY_MARKER not in console:
                return False
            if self.ready_seconds is None:
                self.ready_seconds = time.monotonic() - since
            return self.shell.answers(timeout=10)

        timeout = self.boot_timeout
        try:
            # each poll is one read of the console log: twice a second costs little,
            # and a whole run has dozens of guests
            self.host.wait_for(f"guest {self.name} up", up, timeout, interval=0.5)
        except TimeoutError:
            seen = ("its ready marker, but no SSH" if self.ready_seconds is not None
                    else "no ready marker")
            raise GuestFailed(
                f"{self.host.name}: guest {self.name} not up within {timeout:.0f} s "
                f"({seen}); xl list: {self._xl_list_line()}; console:\n"
                f"{tail(self.console_log())}") from None
        self.up_seconds = time.monotonic() - since

    def moved_to(self, host: Host, *, console_offset: int = 0) -> None:
        """The guest runs on `host` now (migrated there): its shell goes through that
        dom0, its console is read from that host's log from `console_offset` (the
        log's size before the guest arrived: console_size_on), and it is destroyed
        there after the test."""
        self.close()
        self.host = host
        self.shell.via = host
        self.shell.health = host.health
        self.console_offset, self.console_end = console_offset, None

    def console_size_on(self, host: Host) -> int:
        """Bytes of this guest's console log on `host` now. An HVM guest's device model
        starts its serial file anew (create, restore, incoming migration): 0."""
        if self.config.type == "hvm":
            return 0
        return remote_size(host, self.console_path) or 0

    def run(self, command: str, *, timeout: float | None = None,
            check: bool = True) -> CommandResult:
        """Run `command` in the guest's shell (as root)."""
        return self.shell.run(command, check=check,
                              timeout=timeout or self.host.timeouts["command"])

    def console_log(self) -> str:
        """The guest's console since it was created (xenconsoled's log, with a
        timestamp per line); of a huge one, the end."""
        size = None if self.console_end is None else self.console_end - self.console_offset
        data = self.host.remote.read(self.console_path, offset=self.console_offset,
                                     size=size, limit=CONSOLE_READ_LIMIT,
                                     timeout=self.host.timeouts["command"])
        return data.decode(errors="replace").replace("\r\n", "\n").replace("\r", "\n")

    def close(self) -> None:
        """Close the SSH session into the guest."""
        self.shell.close()

    def hotplug_log(self, lines: int = 40) -> str:
        """The end of what libxl and the hotplug scripts logged about this guest."""
        result = self.host.run(log_tails(f"{shlex.quote(f'/var/log/xen/xl-{self.name}.log')} "
                                         "/var/log/xen/xen-hotplug.log", lines), check=False)
        return result.stdout.strip()

    def domid(self) -> int:
        return int(self.host.run(xl_command("domid", self.name)).stdout.strip())

    def vif(self, devid: int = 0) -> str:
        """The name of the guest's vif `devid` in dom0 (vif<domid>.<devid>)."""
        return f"vif{self.domid()}.{devid}"

    def ping(self, target: str, count: int, interval: float = 1.0) -> PingStats:
        """The guest pings `target` (busybox ping); its summary, whatever the loss."""
        return self.pings([target], count, interval)[0]

    def pings(self, targets: Sequence[str], count: int,
              interval: float = 1.0) -> list[PingStats]:
        """The guest pings all `targets` at once, a busybox ping each; their summaries
        in order, whatever the loss."""
        deadline = int(count * interval + 10)
        outputs = [f"/run/xenhil-ping-{n}" for n in range(len(targets))]
        started = "".join(f"ping -q -c {int(count)} -i {float(interval)} -w {deadline} "
                          f"{shlex.quote(target)} > {output} 2>&1 & "
                          for target, output in zip(targets, outputs, strict=True))
        shown = "; ".join(f"echo {PING_OUTPUT_SEPARATOR}; cat {output}" for output in outputs)
        result = self.run(f"{started}wait; {shown}; rm -f {' '.join(outputs)}",
                          check=False, timeout=deadline + self.host.timeouts["command"])
        parts = (result.stdout + result.stderr).split(PING_OUTPUT_SEPARATOR + "\n")[1:]
        if len(parts) != len(targets):
            raise ValueError(f"{self.name}: {len(parts)} ping outputs for {len(targets)} "
                             f"targets: {result.render()[-500:]}")
        return [parse_ping(part) for part in parts]

    def send_zeros(self, target: str, port: int, size: int, timeout: float) -> None:
        """Send `size` bytes over TCP to `target`:`port` (a TcpSink)."""
        self.run(f"dd if=/dev/zero bs=65536 count={size // 65536} 2>/dev/null "
                 f"| nc {shlex.quote(target)} {int(port)}", timeout=timeout)

    def interfaces(self) -> dict[str, str]:
        """The guest's network interfaces: name -> MAC."""
        output = self.run("for i in /sys/class/net/*; do echo ${i##*/} $(cat $i/address); "
                          "done").stdout
        return dict(line.split() for line in output.splitlines() if len(line.split()) == 2)

    @evidence.action("hot-plug a vif into {self.name}")
    def network_attach(self, mac: str, bridge: str = BRIDGE) -> None:
        """`xl network-attach`: a new vif on `bridge`, hot-plugged."""
        self._xl(xl_command("network-attach", self.name, f"mac={mac},bridge={bridge}"),
                 "xl_create", "got no new vif")

    @evidence.action("unplug a vif of {self.name}")
    def network_detach(self, mac: str) -> None:
        """`xl network-detach` of the vif with `mac`."""
        self._xl(xl_command("network-detach", self.name, mac), "xl_destroy",
                 "did not let its vif go")

    def network_devices(self) -> list[str]:
        """`xl network-list`: the MACs of the guest's vifs, as the toolstack sees them."""
        output = self.host.run(xl_command("network-list", self.name)).stdout
        return re.findall(r"\b(?:[0-9a-f]{2}:){5}[0-9a-f]{2}\b", output)

    def answers_ping(self, count: int = 3) -> bool:
        """dom0 pings the guest; every reply must come."""
        return self.host.run(f"ping -c {int(count)} -W 2 {shlex.quote(str(self.ip))}",
                             check=False).ok

    def counter(self) -> int:
        """Seconds the guest has counted since it booted (/run/counter)."""
        return int(self.run("cat /run/counter").stdout.strip())

    def listed(self) -> bool:
        """`xl list` on its host shows it."""
        return self.name in domain_names(self.host)

    @evidence.action("shut {self.name} down (xl shutdown -w)")
    def shutdown(self) -> None:
        """`xl shutdown -w`: ask the guest to power off, and wait until it is gone."""
        self.shell.close()
        self._xl(xl_command("shutdown", "-w", self.name), "xl_shutdown", "did not shut down")
        # -w returns once the guest has shut down; the domain is destroyed after that
        # (by xl's daemon, on_poweroff), and lingers in xl list until then.
        timeout = self.host.timeouts["xl_destroy"]
        gone = self.host.run(gone_command(self.name, timeout),
                             timeout=timeout + self.host.timeouts["command"], check=False)
        if not gone.ok:
            raise GuestFailed(f"{self.host.name}: guest {self.name} shut down but is still "
                              f"listed {timeout:.0f} s later: {self._xl_list_line()}")

    @evidence.action("destroy {self.name} (xl destroy)")
    def destroy(self) -> None:
        """`xl destroy`: end the domain at once."""
        self.shell.close()
        self._xl(xl_command("destroy", self.name), "xl_destroy", "was not destroyed")

    def _xl(self, command: str, timeout: str, failure: str) -> CommandResult:
        return run_xl(self.host, command, timeout, f"guest {self.name} {failure}",
                      error=GuestFailed)

    def _xl_list_line(self) -> str:
        result = self.host.run(xl_command("list", self.name), check=False)
        return result.stdout.strip().splitlines()[-1] if result.ok else "not listed"


def domain_names(host: Host) -> list[str]:
    return [domain.name for domain in parse_xl_list(host.run("xl list").stdout)]



class GuestFactory:
    """Makes the guests of one test: `factory(on=host)`; `destroy_all()` afterwards."""

    def __init__(self, image: GuestImage, addresses: GuestAddresses, prefix: str) -> None:
        self.image = image
        self.addresses = addresses
        self.prefix = prefix
        self.guests: list[Guest] = []
        self.hosts: set[Host] = set()  # every host a guest was made on (or tried)
        self.leak_check = LeakCheck()
        self._networks: dict[str, ipaddress.IPv4Network] = {}
        self._uploaded: set[tuple[str, str]] = set()  # (host, file) on dom0

    def __call__(self, on: Host, *, name: str | None = None,
                 memory_mb: int = DEFAULT_MEMORY_MB, vcpus: int = 1, type: str = "pv",
                 network: str = "bridge", bridge: str = BRIDGE,
                 disks: Sequence[str] = ()) -> Guest:
        """A guest on host `on`, created and up (ready marker, SSH). `network`: bridge
        (on `bridge`), route or nat (vif-route, vif-nat: on the host's routed or NAT
        guest network from the lab file); `disks`: xl disk specs, e.g.
        "vdev=xvdb, access=rw, target=/dev/sdb"."""
        guest = self._prepare_guest(on, name=name, memory_mb=memory_mb, vcpus=vcpus,
                                    type=type, network=network, bridge=bridge, disks=disks)
        self._create(guest)
        return guest

    def on_each(self, *hosts: Host, type: str = "pv", network: str = "bridge") -> list[Guest]:
        """A guest on each of `hosts` (one host may be named twice), created side by
        side and up, in the order of `hosts`. A guest boots on its own host's machine,
        so guests on two hosts come up in about the time of one. Every creation runs to
        its end; then the first failure, in the order of `hosts`, is raised."""
        made = [self._prepare_guest(host, type=type, network=network) for host in hosts]
        deadline = max(guest.creation_deadline for guest in made)
        with evidence.step("create " + ", ".join(f"guest {guest.name} on {guest.host.name}"
                                                 for guest in made) + " side by side"):
            errors = side_by_side({guest.name: partial(self._create, guest) for guest in made},
                                  deadline, "create")
        leave_unfinished_alone(errors, {guest.name: guest.host for guest in made},
                               {guest.name: f"creating guest {guest.name}" for guest in made},
                               deadline)
        for guest in made:
            if guest.name in errors:
                raise errors[guest.name]
        return made

    def _prepare_guest(self, on: Host, *, name: str | None = None,
                       memory_mb: int = DEFAULT_MEMORY_MB, vcpus: int = 1, type: str = "pv",
                       network: str = "bridge", bridge: str = BRIDGE,
                       disks: Sequence[str] = ()) -> Guest:
        """Everything before `xl create`: the guest's address, config and files on
        dom0. The guest is this factory's from here on, so it is destroyed after the
        test even if its creation fails."""
        bridge_net = self._prepare(on)
        guest_net, gateway = bridge_net, None
        if network != "bridge":
            guest_net = guest_network(on, network)
        mac, address = self.addresses.next(guest_net)
        if network == "route":
            gateway = route_gateway(on)
        elif network == "nat":
            gateway = nat_router(address)
        config = GuestConfig(
            name=guest_name(name or f"{self.prefix}-{len(self.guests) + 1}"),
            kernel=f"{GUEST_FILES_DIR}/{self.image.kernel_for(type).name}",
            ramdisk=f"{GUEST_FILES_DIR}/{self.image.initrd.name}",
            address=address, mac=mac, memory_mb=memory_mb, vcpus=vcpus, bridge=bridge,
            type=type, network=network, gateway=gateway, disks=tuple(disks),
        )
        # Only what this type boots: the bzImage goes to a host once an HVM guest needs it.
        needed = [path for path in self.image.files_for(type)
                  if (on.name, path.name) not in self._uploaded]
        upload_guest_files(on, needed)
        self._uploaded.update((on.name, path.name) for path in needed)
        guest = Guest(config, on, self.image)
        self.guests.append(guest)
        return guest

    def _create(self, guest: Guest) -> None:
        earlier = [g for g in self.guests
                   if g is not guest and (g.host, g.name) == (guest.host, guest.name)]
        try:
            guest.create()
        finally:
            for same_name in earlier:  # its console log goes on with this guest's
                if same_name.console_end is None \
                        and guest.console_offset >= same_name.console_offset:
                    same_name.console_end = guest.console_offset

    def network_of(self, host: Host) -> ipaddress.IPv4Network:
        """The network of the bridge `host`'s guests are on."""
        return self._prepare(host)

    def __iter__(self) -> Iterator[Guest]:
        return iter(self.guests)

    def destroy_all(self) -> list[str]:
        """Destroy every guest this factory made that its host still lists; returns
        what could not be destroyed. A crashed or hung host is left alone: its guests
        go with its power cycle, and its fault is the test's verdict already."""
        on_host: dict[Host, dict[str, Guest]] = {}
        for guest in self.guests:
            if guest.host.health.current is None:
                on_host.setdefault(guest.host, {}).setdefault(guest.name, guest)

        def destroy_on(host: Host) -> list[str]:
            problems = []
            for guest in on_host[host].values():
                try:
                    if guest.listed():
                        guest.destroy()
                    if guest.listed():
                        problems.append(f"{host.name}: {guest.name} still listed after "
                                        "xl destroy")
                except Exception as error:  # every guest gets its chance
                    problems.append(f"{host.name}: {guest.name}: {error}")
            return problems

        # Hosts side by side: each destroy waits on its own machine.
        hosts = sorted(on_host, key=lambda host: host.name)
        deadline = max([len(on_host[host]) * (host.timeouts["xl_destroy"]
                                              + 3 * host.timeouts["command"])
                        for host in hosts], default=0.0)
        try:
            done = on_each_host(hosts, destroy_on, deadline, "destroy guests")
        except HostBroken as broken:
            return [str(broken)]
        return [problem for host in hosts for problem in done[host.name]]

    def close(self) -> None:
        for guest in self.guests:
            guest.close()

    def _prepare(self, host: Host) -> ipaddress.IPv4Network:
        """Once per host and test: console logging, the bridge, and the host's state
        noted for the leak check."""
        self.hosts.add(host)
        if host.name not in self._networks:
            ensure_console_logging(host)
            output = host.run(f"ip -o -4 addr show dev {BRIDGE}", check=False).stdout
            network = bridge_network(output)
            if network is None:
                raise InfrastructureError(f"{host.name}: no bridge {BRIDGE} with an IPv4 "
                                          "address: guests have no network")
            self.leak_check.watch(host)
            self._networks[host.name] = network
        return self._networks[host.name]


def public_key_line(key_file: Path) -> str:
    """`type base64` of the public half of an SSH private key file (for the guest's
    authorized_keys)."""
    key = paramiko.PKey.from_path(key_file)
    return f"{key.get_name()} {key.get_base64()}"
