"""Networking on a Xen host and in its guests: ping statistics, a TCP throughput
measurement, dom0 forwarding and NAT set up for a test, and the state a failing
network test needs for its diagnosis.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import shlex
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import InfrastructureError, ProductFailure
from .figures import Figures
from .host import Host
from .xenlogs import XEN_LOGS, log_tails

if TYPE_CHECKING:
    from .guests.guest import Guest

log = logging.getLogger(__name__)

# How every networking scenario measures (the bar): 100 pings at 0.2 s with
# under 1 % loss, and a TCP transfer into a dom0 with its throughput recorded.
PINGS = 100
PING_INTERVAL = 0.2
MAX_LOSS_PERCENT = 1.0
TRANSFER_BYTES = 8 * 2**20  # TCG guests move a few MB/s
_sink_ports = itertools.count(5201)

# busybox: "10 packets transmitted, 10 packets received, 0% packet loss"
# iputils: "10 packets transmitted, 10 received, 0% packet loss, time 1811ms"
PING_COUNTS = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
# busybox: "round-trip min/avg/max = 0.3/0.5/1.1 ms"; iputils: "rtt min/avg/max/mdev = ..."
PING_RTT = re.compile(r"(?:round-trip|rtt) min/avg/max(?:/mdev)? = ([\d.]+)/([\d.]+)/([\d.]+)")

# Receives `size` bytes on `address`:`port` (that address only, not every interface of
# dom0), then prints what it saw as JSON: a TCP sink measured at the receiving end, so
# sender-side buffering does not flatter the figure.
SINK = r"""
import json, os, socket, sys, time
port, size, output, address = int(sys.argv[1]), int(sys.argv[2]), sys.argv[4], sys.argv[5]
server = socket.create_server((address, port))
server.settimeout(float(sys.argv[3]))
connection, peer = server.accept()
got, first, last = 0, None, None
while got < size:
    data = connection.recv(1 << 20)
    if not data:
        break
    now = time.monotonic()
    first = first or now
    got, last = got + len(data), now
connection.close()
with open(output + ".part", "w") as f:
    json.dump({"peer": peer[0], "bytes": got,
               "seconds": (last - first) if first and last else 0}, f)
os.rename(output + ".part", output)
"""
SINK_PATH = "/run/xenhil"  # not /tmp: the leak check watches /tmp


@dataclass(frozen=True)
class PingStats:
    transmitted: int
    received: int
    rtt_avg_ms: float | None

    @property
    def loss_percent(self) -> float:
        if self.transmitted == 0:
            return 100.0
        return 100.0 * (self.transmitted - self.received) / self.transmitted

    def __str__(self) -> str:
        rtt = f", rtt avg {self.rtt_avg_ms:.2f} ms" if self.rtt_avg_ms is not None else ""
        return (f"{self.received}/{self.transmitted} replies, "
                f"{self.loss_percent:.1f} % loss{rtt}")


def parse_ping(output: str) -> PingStats:
    counts = PING_COUNTS.search(output)
    if counts is None:
        raise ValueError(f"no ping summary in: {output.strip()[-300:]!r}")
    rtt = PING_RTT.search(output)
    return PingStats(int(counts.group(1)), int(counts.group(2)),
                     float(rtt.group(2)) if rtt else None)


@dataclass(frozen=True)
class Throughput:
    peer: str
    bytes: int
    seconds: float

    @property
    def mbit_per_s(self) -> float:
        return self.bytes * 8 / self.seconds / 1e6 if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (f"{self.bytes / 2**20:.0f} MiB in {self.seconds:.2f} s = "
                f"{self.mbit_per_s:.1f} Mbit/s (from {self.peer})")


def sink_command(address: str, port: int, size: int, timeout: float, output: str) -> str:
    """Start SINK in the background, listening on `address` only, writing to `output`."""
    directory, out = shlex.quote(output.rsplit("/", 1)[0] or "/"), shlex.quote(output)
    # nohup: the sink must outlive this SSH session; it writes its result itself
    return (f"mkdir -p {directory} && rm -f {out} && "
            f"nohup python3 -c {shlex.quote(SINK)} {int(port)} {int(size)} {timeout:.0f} "
            f"{out} {shlex.quote(address)} > {shlex.quote(output + '.log')} 2>&1 &")


class TcpSink:
    """A one-shot TCP receiver on a host (python3 in dom0), started in the background,
    listening on the address its peer connects to."""

    def __init__(self, host: Host, address: str, port: int, size: int) -> None:
        self.host, self.address, self.port, self.size = host, address, port, size
        self.output = f"{SINK_PATH}/sink-{port}.json"

    def start(self, timeout: float) -> None:
        self.host.run(sink_command(self.address, self.port, self.size, timeout, self.output))
        listening = f"ss -Hltn 'sport = :{self.port}' | grep -q LISTEN"
        self.host.wait_for(f"TCP sink on port {self.port}",
                           lambda: self.host.run(listening, check=False).ok, 30)

    def result(self, timeout: float) -> Throughput:
        done = f"test -e {self.output}"
        try:
            self.host.wait_for(f"TCP sink on port {self.port} to finish",
                               lambda: self.host.run(done, check=False).ok, timeout)
        except TimeoutError:
            errors = self.host.run(f"cat {self.output}.log", check=False).stdout
            raise InfrastructureError(f"{self.host.name}: the TCP sink on port {self.port} "
                                      f"did not finish: {errors.strip()[-500:]}") from None
        text = self.host.run(f"cat {self.output}; rm -f {self.output} {self.output}.log").stdout
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise InfrastructureError(f"{self.host.name}: TCP sink failed: "
                                      f"{text.strip()[-500:]}") from None
        return Throughput(data["peer"], data["bytes"], data["seconds"])


class NetworkFailure(ProductFailure):
    """Traffic that should flow did not, or not well enough."""


def check_pings(guest: Guest, paths: Mapping[str, str], figures: Figures) -> None:
    """`guest` pings each target of `paths` ({what: target}) PINGS times at
    PING_INTERVAL, all paths at once; fails at MAX_LOSS_PERCENT on any of them, naming
    each. A few pings first, not counted: the loss is measured on paths whose neighbours
    are resolved (through proxy ARP, the first packets wait on two resolutions)."""
    whats, targets = list(paths), list(paths.values())
    silent = [f"{what}: no reply at all from {target}: {warm_up}"
              for what, target, warm_up in zip(whats, targets, guest.pings(targets, 3, 0.5),
                                                strict=True)
              if warm_up.received == 0]
    if silent:
        raise NetworkFailure("; ".join(silent))
    lossy = []
    for what, stats in zip(whats, guest.pings(targets, PINGS, PING_INTERVAL), strict=True):
        figures.add(f"{what} loss", stats.loss_percent, "%")
        if stats.rtt_avg_ms is not None:
            figures.add(f"{what} rtt avg", stats.rtt_avg_ms, "ms")
        if stats.loss_percent >= MAX_LOSS_PERCENT:
            lossy.append(f"{what}: {stats}")
    if lossy:
        raise NetworkFailure(f"{'; '.join(lossy)} (at most {MAX_LOSS_PERCENT} % allowed)")


def measure_transfer(guest: Guest, host: Host, address: str, what: str,
                     figures: Figures) -> Throughput:
    """TRANSFER_BYTES over TCP from `guest` into `host`'s dom0 listening at `address`."""
    timeout = host.timeouts["tcp_transfer"]
    sink = TcpSink(host, address, next(_sink_ports), TRANSFER_BYTES)
    sink.start(timeout)
    guest.send_zeros(address, sink.port, TRANSFER_BYTES, timeout)
    result = sink.result(timeout)
    log.info("%s: %s", what, result)
    if result.bytes != TRANSFER_BYTES:
        raise NetworkFailure(f"{what}: {result}; {TRANSFER_BYTES} bytes were sent")
    figures.add(f"{what} throughput", result.mbit_per_s, "Mbit/s")
    return result


@contextmanager
def forwarding(*hosts: Host) -> Iterator[None]:
    """IPv4 forwarding on in each dom0 for the block (what Xen's network-route and
    network-nat scripts do), then back to what it was."""
    before = {}
    for host in hosts:
        before[host] = host.run("cat /proc/sys/net/ipv4/ip_forward").stdout.strip()
        host.run("sysctl -qw net.ipv4.ip_forward=1")
    try:
        yield
    finally:
        for host, value in before.items():
            host.run(f"sysctl -qw net.ipv4.ip_forward={value}", check=False)


@contextmanager
def routes(host: Host, via: str, networks: list[str]) -> Iterator[None]:
    """Routes to `networks` through `via` in `host`'s dom0 for the block."""
    added = []
    try:
        for network in networks:
            host.run(route_command("replace", network, via))
            added.append(network)
        yield
    finally:
        for network in added:
            host.run(route_command("del", network, via), check=False)


def route_command(action: str, network: str, via: str) -> str:
    return shlex.join(["ip", "route", action, network, "via", via])


def nat_command(action: str, source: str, out: str) -> str:
    """iptables -A (add) or -D (delete) of network-nat's rule for `source` via `out`."""
    return shlex.join(["iptables", "-t", "nat", action, "POSTROUTING", "-s", source,
                       "-o", out, "-j", "MASQUERADE"])


@contextmanager
def masquerade(host: Host, source: str, out: str) -> Iterator[None]:
    """NAT for `source` leaving through `out` (network-nat's rule) for the block."""
    host.run(nat_command("-A", source, out))
    try:
        yield
    finally:
        host.run(nat_command("-D", source, out), check=False)


def bridge_of(host: Host, interface: str) -> str | None:
    """The bridge `interface` is a port of in dom0, or None."""
    result = host.run(f"readlink {shlex.quote(f'/sys/class/net/{interface}/master')}",
                      check=False)
    return result.stdout.strip().rsplit("/", 1)[-1] if result.ok else None


def interface_exists(host: Host, interface: str) -> bool:
    return host.run(f"test -e {shlex.quote(f'/sys/class/net/{interface}')}", check=False).ok


def wait_gone(host: Host, interface: str, timeout: float) -> bool:
    """Until dom0 has no `interface` (its hotplug teardown done); False on timeout."""
    try:
        host.wait_for(f"{interface} gone", lambda: not interface_exists(host, interface),
                      timeout)
    except TimeoutError:
        return False
    return True


DIAGNOSIS = (
    ("xl list -l", "xl list -l"),
    ("bridges", "bridge link show; echo; ip -d link show type bridge"),
    ("addresses", "ip -o addr show"),
    ("routes", "ip route show table all"),
    ("forwarding and NAT", "sysctl net.ipv4.ip_forward; iptables -t nat -S 2>&1"),
    ("hotplug logs", log_tails(XEN_LOGS, 60)),
)


def diagnosis(host: Host) -> str:
    """dom0's view of guests and networks, for a failed test's report."""
    parts = []
    started = time.monotonic()
    for title, command in DIAGNOSIS:
        result = host.run(command, check=False, timeout=host.timeouts["command"])
        parts.append(f"### {title}: {command}\n{result.stdout}{result.stderr}")
    log.info("%s: network diagnosis collected in %.1f s", host.name,
             time.monotonic() - started)
    return "\n".join(parts)
