"""labgrid console on top of the com1 recorder: ShellDriver and expect over the recorded stream.

A host's console serves one client, and that client is the harness's `Com1Recorder`
(running from before power-on, for the whole session). labgrid's own SerialDriver would
be a second client, so this driver does not connect anywhere: it reads a subscription of
the running recorder and writes through it. labgrid waits therefore see exactly the bytes
that are in com1/<host>.log, and nothing is lost while no driver is active.

How the driver finds its recorder: the target has one console resource, as in the lab
file (harness/lab.py); on activation the driver looks up the recorder started for that
console's endpoint with `harness.com1.recorder_for()`. Recorders register themselves in
start(), so the only rule is: start the host's recorder before activating its console.
The console resources:

    Com1Port: {host: 127.0.1.1, port: 6231}            # raw TCP (ours)
    NetworkSerialPort: {host: consoles, port: 7001}    # labgrid's: RFC 2217 (or raw)
    RawSerialPort: {port: /dev/ttyUSB0, speed: 115200} # labgrid's: a device here
    IPMISOLPort: {}                                    # ours: SOL of the IPMIPowerPort's BMC
    PlaceSerialPort: {}                                # ours: what an exporter serves the place

A lab file entry:

    resources:
      Com1Port: {host: 127.0.1.1, port: 6231}
    drivers:
      Com1ConsoleDriver: {}
      ShellDriver: {prompt: 'root@\\w+:~# ', login_prompt: ' login: ', username: root}

With `watch` (the default) every byte the driver reads also goes through a
ConsoleWatcher: a Xen panic or dom0 oops during any labgrid wait (login, run, expect)
raises ConsoleCrash at once, with the dump as evidence, instead of a pexpect timeout.
The driver raises once per crash and then watches afresh (the host may be rebooted).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import attr
from labgrid.driver.common import Driver
from labgrid.driver.consoleexpectmixin import ConsoleExpectMixin
from labgrid.factory import target_factory
from labgrid.protocol import ConsoleProtocol
from labgrid.resource import NetworkSerialPort, RawSerialPort
from labgrid.resource.common import Resource
from pexpect import TIMEOUT

from harness.com1 import Com1Mark, Com1Recorder, Com1Stream, recorder_for
from harness.console_transport import host_port
from harness.console_watch import ConsoleWatcher
from harness.exported_console import place_console_endpoint

_READ_LIMIT = 65536  # bytes per read when labgrid sets no max_size


@target_factory.reg_resource
@attr.s(eq=False)
class Com1Port(Resource):
    """A host's console as a raw TCP port: QEMU chardev socket, ser2net or conserver.

    Args:
        host (str): address of the console server, exactly as given to the recorder
        port (int): its TCP port
        speed (int): the UART's bit rate at the host (for Xen's command line)
    """

    host: str = attr.ib(validator=attr.validators.instance_of(str))
    port: int = attr.ib(validator=attr.validators.instance_of(int))
    speed: int = attr.ib(default=115200, validator=attr.validators.instance_of(int))


@target_factory.reg_resource
@attr.s(eq=False)
class IPMISOLPort(Resource):
    """A host's console as the Serial-over-LAN of its BMC (the target's IPMIPowerPort).

    Args:
        speed (int): the UART's bit rate at the host (for Xen's command line)
    """

    speed: int = attr.ib(default=115200, validator=attr.validators.instance_of(int))


@target_factory.reg_resource
@attr.s(eq=False)
class PlaceSerialPort(Resource):
    """A host's console as the NetworkSerialPort a labgrid-exporter serves for the host's
    place (harness.exported_console): looked up on the coordinator at every connect.

    Args:
        speed (int): the UART's bit rate at the host (for Xen's command line)
        resource (str): the NetworkSerialPort's name in the place, when it has several
    """

    speed: int = attr.ib(default=115200, validator=attr.validators.instance_of(int))
    resource: str | None = attr.ib(
        default=None, validator=attr.validators.optional(attr.validators.instance_of(str)))


def console_endpoint(port: Resource, bmc: Resource | None) -> str:
    """The endpoint (harness.console_transport) a console resource names."""
    if isinstance(port, PlaceSerialPort):
        return place_console_endpoint(port.target.name)
    if isinstance(port, IPMISOLPort):
        if bmc is None:
            raise LookupError(f"{port}: Serial-over-LAN needs the target's IPMIPowerPort")
        return f"ipmi-sol://{host_port(bmc.address, bmc.port)}"
    if isinstance(port, RawSerialPort):
        return str(port.port)
    if isinstance(port, NetworkSerialPort) and port.protocol == "rfc2217":
        return f"rfc2217://{host_port(port.host, port.port)}"
    return host_port(port.host, port.port)


@target_factory.reg_driver
@attr.s(eq=False)
class Com1ConsoleDriver(ConsoleExpectMixin, Driver, ConsoleProtocol):
    """ConsoleProtocol over the running Com1Recorder of the bound console resource.

    `watcher` is the ConsoleWatcher of what this driver has read (None without `watch`);
    it is new at every activation and after every ConsoleCrash raised.
    """

    bindings: ClassVar[dict[str, Any]] = {
        "port": {"Com1Port", "NetworkSerialPort", "RawSerialPort", "IPMISOLPort",
                 "PlaceSerialPort"},
        "bmc": {"IPMIPowerPort", None},  # whose Serial-over-LAN an IPMISOLPort is
    }

    txdelay: float = attr.ib(default=0.0, validator=attr.validators.instance_of(float))
    txchunk: int = attr.ib(default=1, validator=attr.validators.instance_of(int))
    watch: bool = attr.ib(default=True, validator=attr.validators.instance_of(bool))

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._recorder: Com1Recorder | None = None
        self._stream: Com1Stream | None = None
        self.watcher: ConsoleWatcher | None = None

    def on_activate(self) -> None:
        self._recorder = recorder_for(console_endpoint(self.port, self.bmc))
        self._stream = self._recorder.subscribe()
        self.watcher = ConsoleWatcher() if self.watch else None

    def on_deactivate(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._recorder = self._stream = None

    def _read(self, size: int = 1, timeout: float = 0.0, max_size: int | None = None) -> bytes:
        """At least `size` bytes unless `timeout` expires first (then what came, if any)."""
        assert self._stream is not None
        limit = max_size or max(size, _READ_LIMIT)
        deadline = time.monotonic() + timeout
        data = self._stream.read(limit, timeout)
        while data and len(data) < min(size, limit):
            remaining = deadline - time.monotonic()
            more = self._stream.read(limit - len(data), remaining) if remaining > 0 else b""
            if not more:
                break
            data += more
        if self.watcher is not None and data:
            self.watcher.feed(data)
            if self.watcher.crash is not None:
                crash = self._stream.settle_crash(self.watcher)
                self.watcher = ConsoleWatcher()
                raise crash
        if not data:
            raise TIMEOUT(f"Timeout of {timeout:.2f} seconds exceeded on com1 of "
                          f"{self._stream.name}")
        return data

    def _write(self, data: bytes) -> int:
        assert self._recorder is not None
        return self._recorder.write(data)

    @Driver.check_active
    def subscribe(self) -> Com1Stream:
        """A reader of every byte from now on (for the boot strategy's stages)."""
        assert self._recorder is not None
        return self._recorder.subscribe()

    @Driver.check_active
    def mark(self) -> Com1Mark:
        """The current end of com1's log (to slice the evidence from)."""
        assert self._recorder is not None
        return self._recorder.mark()

    def __str__(self) -> str:
        return f"Com1ConsoleDriver({self.target.name})"
