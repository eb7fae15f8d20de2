"""A host's console that a labgrid-exporter serves, found through the host's place.

In a lab shared through a labgrid coordinator, a console server (ser2net) can be
exported by labgrid-exporter as a NetworkSerialPort, and the host's place matches it
(`labgrid-client -p PLACE add-match EXPORTER/GROUP/NetworkSerialPort`). When a run locks
the place, the coordinator acquires the matching resources for it; at every connect,
PlaceSerialPort asks the coordinator for the place's acquired NetworkSerialPort (so a
restarted exporter is found again) and connects there through the transport the
resource names: RFC 2217 (labgrid's default, ser2net's telnet(rfc2217)) or raw TCP.

Every failure is a ConsoleNotExported (an OSError, as console ports raise) naming the
host, the place and the coordinator, and saying what a lab engineer can do about it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from .console_transport import ConsoleConnection, ConsolePort, RawTCPPort, RFC2217Port
from .errors import HarnessError

if TYPE_CHECKING:
    from labgrid.remote.common import Place, ResourceEntry

log = logging.getLogger(__name__)

# What labgrid-exporter serves a console as: a NetworkSerialPort in its config, or the
# one it makes of a RawSerialPort or USBSerialPort by running ser2net for it.
EXPORTED_CLASS = "NetworkSerialPort"
PROTOCOLS = ("rfc2217", "raw")
# s, for the coordinator's answer when a run checks its hosts before it starts
RESOLVE_TIMEOUT = 15.0

Resources = Mapping[str, Mapping[str, Mapping[str, "ResourceEntry"]]]


def place_console_endpoint(host: str) -> str:
    """The endpoint of `host`'s PlaceSerialPort; static, unlike the address the exporter
    serves, because the console driver finds the recorder by it."""
    return f"labgrid-place://{host}"


class ConsoleNotExported(OSError):
    """The coordinator gave no usable console for the place; the message says why."""


@dataclass(frozen=True)
class PlaceSerialPort:
    """The NetworkSerialPort acquired for `place` on the labgrid coordinator at
    `coordinator` (HOST:PORT); `resource` names it when the place has several."""

    host: str
    place: str
    coordinator: str
    speed: int = 115200
    resource: str | None = None

    @property
    def endpoint(self) -> str:
        return place_console_endpoint(self.host)

    @property
    def description(self) -> str:
        return (f"host {self.host}: console of place {self.place} on labgrid coordinator "
                f"{self.coordinator}")

    def connect(self, timeout: float) -> ConsoleConnection:
        return self.resolve(timeout).connect(timeout)

    def resolve(self, timeout: float) -> RFC2217Port | RawTCPPort:
        """Where the exporter serves the place's console now; ConsoleNotExported when it
        serves none, or the coordinator does not answer within `timeout` s."""
        # Imported here: harness.locking imports the lab model, which imports this.
        from .locking.base import default_owner
        from .locking.coordinator import Coordinator

        coordinator = Coordinator(self.coordinator, default_owner())

        async def ask() -> RFC2217Port | RawTCPPort:
            async with coordinator.connect() as connection:
                place = await connection.place(self.place)
                return self.exported_port(place, connection.resources)

        try:
            port: RFC2217Port | RawTCPPort = coordinator.run(asyncio.wait_for(ask(), timeout))
        except TimeoutError:
            raise ConsoleNotExported(f"{self.description}: the coordinator did not answer "
                                     f"within {timeout:g} s") from None
        except ConsoleNotExported:
            raise
        except HarnessError as error:  # unreachable coordinator, no such place
            said = str(error).removeprefix(f"labgrid coordinator {self.coordinator}: ")
            raise ConsoleNotExported(f"{self.description}: {said}") from None
        log.info("%s is %s", self.description, port.endpoint)
        return port

    def exported_port(self, place: Place, resources: Resources) -> RFC2217Port | RawTCPPort:
        """The port of the place's acquired NetworkSerialPort, as `resources` (the
        coordinator's, by exporter, group and name) describe it."""
        if not place.acquired:
            raise ConsoleNotExported(
                f"{self.description}: the place is not locked, and the coordinator hands a "
                "place its exporters' resources only while it is locked (a run locks it; by "
                f"hand: labgrid-client -x {self.coordinator} -p {self.place} acquire)")
        serial = {}
        for path in place.acquired_resources:
            exporter, group, cls, name = path
            match = place.getmatch(path)
            named = match.rename if match is not None and match.rename else name
            if cls == EXPORTED_CLASS:
                serial[named] = (exporter, group, name)
        chosen = serial if self.resource is None else {
            named: path for named, path in serial.items() if named == self.resource}
        if not chosen:
            raise ConsoleNotExported(self._why_none(place, resources, sorted(serial)))
        if len(chosen) > 1:
            raise ConsoleNotExported(
                f"{self.description}: the place has {len(chosen)} NetworkSerialPorts "
                f"({', '.join(sorted(chosen))}): name the console's with `resource:` under "
                "PlaceSerialPort in the lab file")
        exporter, group, name = next(iter(chosen.values()))
        entry = resources.get(exporter, {}).get(group, {}).get(name)
        served = f"{exporter}/{group}/{EXPORTED_CLASS}/{name}"
        if entry is None or "cls" not in entry.data:
            raise ConsoleNotExported(
                f"{self.description}: exporter {exporter} is offline (the place's {served} "
                f"is orphaned): start labgrid-exporter there again; the coordinator gives "
                "the resource back to the place when the exporter returns")
        if not entry.avail:
            raise ConsoleNotExported(f"{self.description}: exporter {exporter} reports "
                                     f"{served} unavailable (its serial device is gone?)")
        if entry.extra.get("proxy_required"):
            raise ConsoleNotExported(
                f"{self.description}: exporter {exporter} runs isolated (-i), so {served} "
                f"is reachable only through SSH to {entry.extra.get('proxy')}, which the "
                "harness does not do: run that exporter without --isolated")
        return self._port(served, entry.args)

    def _port(self, served: str, params: Mapping[str, object]) -> RFC2217Port | RawTCPPort:
        host, port = params.get("host"), params.get("port")
        protocol = params.get("protocol", "rfc2217")
        speed = params.get("speed", 115200)
        if not isinstance(host, str) or not host or not isinstance(port, int) \
                or not 0 < port < 65536 or protocol not in PROTOCOLS:
            raise ConsoleNotExported(
                f"{self.description}: {served} is served as host {host!r}, port {port!r}, "
                f"protocol {protocol!r}: fix the exporter's config (a host, a TCP port, "
                f"protocol {' or '.join(PROTOCOLS)})")
        if speed != self.speed:
            raise ConsoleNotExported(
                f"{self.description}: {served} is served at {speed} bit/s, the lab file says "
                f"{self.speed} (PlaceSerialPort speed): make the two agree")
        if protocol == "rfc2217":
            return RFC2217Port(host, port, self.speed)
        return RawTCPPort(host, port, self.speed)

    def _why_none(self, place: Place, resources: Resources, acquired: list[str]) -> str:
        if self.resource is not None and acquired:
            return (f"{self.description}: the place has no NetworkSerialPort named "
                    f"{self.resource} (it has: {', '.join(acquired)})")
        matches = [match for match in place.matches if fnmatchcase(EXPORTED_CLASS, match.cls)]
        if not matches:
            return (f"{self.description}: the place matches no NetworkSerialPort: add the "
                    f"exporter's with labgrid-client -x {self.coordinator} -p {self.place} "
                    f"add-match EXPORTER/GROUP/{EXPORTED_CLASS}")
        patterns = ", ".join(str(match) for match in matches)
        now_served = [f"{exporter}/{group}/{EXPORTED_CLASS}/{name}"
                      for exporter, groups in sorted(resources.items())
                      for group, entries in sorted(groups.items())
                      for name, entry in sorted(entries.items())
                      if entry.data.get("cls") == EXPORTED_CLASS
                      and place.hasmatch((exporter, group, EXPORTED_CLASS, name))]
        if now_served:
            return (f"{self.description}: {', '.join(now_served)} matches {patterns}, but was "
                    "not served when the place was locked (its exporter came later), and the "
                    "coordinator gives a place resources only when it is locked: lock it again "
                    "(the next run does)")
        return (f"{self.description}: no exporter serves a NetworkSerialPort matching "
                f"{patterns}: is the labgrid-exporter serving it running, and connected to "
                f"this coordinator? (labgrid-client -x {self.coordinator} resources lists "
                "what the exporters serve)")


def unserved_consoles(consoles: Iterable[ConsolePort],
                      timeout: float = RESOLVE_TIMEOUT) -> list[str]:
    """Why each PlaceSerialPort of `consoles` cannot be had now (the others are not
    asked): a run checks this once its places are locked, before any host is touched."""
    problems = []
    for console in consoles:
        if isinstance(console, PlaceSerialPort):
            try:
                console.resolve(timeout)
            except ConsoleNotExported as error:
                problems.append(str(error))
    return problems
