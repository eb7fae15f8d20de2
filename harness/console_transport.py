"""Console transports: the ways a host's serial console reaches the com1 recorder.

The lab file names one per host (harness/lab.py). The recorder (harness/com1.py) uses
each the same way: `connect()`, then `read()` with a timeout until it raises
ConsoleClosed, `write()` for keystrokes, `close()`. What a transport speaks besides the
console's bytes (telnet negotiation, ipmitool's banner) never reaches the recorder.

- RawTCPPort: a TCP port carrying the bytes as they are (QEMU's chardev socket, ser2net
  or conserver in raw mode).
- RFC2217Port: a telnet port with RFC 2217 serial control (ser2net's telnet(rfc2217)
  accepter, labgrid's exporter), through pyserial's rfc2217:// client, which answers the
  negotiation and undoes the IAC escaping.
- SerialDevicePort: a serial device on this machine (/dev/ttyUSB0), through pyserial.
- SOLPort: the BMC's Serial-over-LAN through `ipmitool sol activate`, with the password
  passed as for power control (-f or -E, never on argv), and a session another client
  left active deactivated first.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import select
import signal
import socket
import subprocess
import threading
import time
import tty
from dataclasses import dataclass
from typing import Any, Protocol

import serial

from .errors import ConfigError
from .ipmi import BMC, BMCError, IPMITool

WRITE_TIMEOUT = 5.0  # s, for a console that does not take input
READ_WAIT = 0.25  # s, how long the recorder's reads wait (and so how soon it sees stop())
# What `ipmitool sol activate` prints on its stdout before the console's bytes.
SOL_BANNER = re.compile(rb"\[SOL Session operational\.[^\]\n]*\]\r?\n")


class ConsoleClosed(ConnectionError):
    """The console connection ended; the message says why."""


class ConsoleConnection(Protocol):
    def read(self, timeout: float) -> bytes:
        """What arrived, waiting up to `timeout` s for it; b"" if nothing did.
        Raises ConsoleClosed once the connection has ended."""

    def write(self, data: bytes) -> None:
        """Send all of `data`; OSError when the console does not take it."""

    def close(self) -> None: ...


class ConsolePort(Protocol):
    """One console, as the lab file names it."""

    @property
    def endpoint(self) -> str:
        """What the console is, for messages; one recorder per endpoint."""

    @property
    def speed(self) -> int:
        """The UART's bit rate at the host end (Xen's comN=<speed>,8n1)."""

    def connect(self, timeout: float) -> ConsoleConnection:
        """A live connection; OSError when there is none within `timeout` s."""


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


AddressInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]


def resolve(host: str, port: int, timeout: float) -> AddressInfo:
    """getaddrinfo with a deadline (the resolver has none of its own)."""
    answer: list[AddressInfo] = []
    problem: list[OSError] = []

    def lookup() -> None:
        try:
            answer.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as error:
            problem.append(error)

    resolver = threading.Thread(target=lookup, name=f"resolve-{host}", daemon=True)
    resolver.start()
    resolver.join(timeout)
    if problem:
        raise problem[0]
    if not answer:
        raise TimeoutError(f"no address for {host} within {timeout:.0f} s")
    return answer[0]


# -- raw TCP -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawTCPPort:
    host: str
    port: int
    speed: int = 115200

    @property
    def endpoint(self) -> str:
        return host_port(self.host, self.port)

    def connect(self, timeout: float) -> ConsoleConnection:
        family, kind, proto, _, address = resolve(self.host, self.port, timeout)
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            # Keepalive: a host that vanished must show up as a gap, not as silence.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(WRITE_TIMEOUT)  # reads only follow readiness, so this bounds sends
        except BaseException:
            sock.close()
            raise
        return _SocketConnection(sock)


class _SocketConnection:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def read(self, timeout: float) -> bytes:
        if not select.select([self._sock], [], [], timeout)[0]:
            return b""
        try:
            data = self._sock.recv(65536)
        except OSError as exc:
            raise ConsoleClosed(str(exc) or type(exc).__name__) from exc
        if not data:
            raise ConsoleClosed("connection closed by the console server")
        return data

    def write(self, data: bytes) -> None:
        self._sock.sendall(data)

    def close(self) -> None:
        self._sock.close()


# -- pyserial: RFC 2217 and local devices --------------------------------------------------


@dataclass(frozen=True)
class RFC2217Port:
    host: str
    port: int
    speed: int = 115200

    @property
    def endpoint(self) -> str:
        return f"rfc2217://{host_port(self.host, self.port)}"

    def connect(self, timeout: float) -> ConsoleConnection:
        # ign_set_control: a server without modem lines (a pty behind ser2net) never
        # acknowledges DTR/RTS, and the console needs neither.
        # pyserial's rfc2217 has no write_timeout: its socket's own timeout bounds sends.
        url = f"{self.endpoint}?ign_set_control&timeout={timeout:g}"
        return _SerialConnection.open(lambda: serial.serial_for_url(
            url, baudrate=self.speed, timeout=READ_WAIT))


@dataclass(frozen=True)
class SerialDevicePort:
    device: str
    speed: int = 115200

    @property
    def endpoint(self) -> str:
        return self.device

    def connect(self, timeout: float) -> ConsoleConnection:
        # exclusive: a second reader of the device would steal bytes from the log.
        return _SerialConnection.open(lambda: serial.Serial(
            self.device, self.speed, timeout=READ_WAIT, write_timeout=WRITE_TIMEOUT,
            exclusive=True))


class _SerialConnection:
    def __init__(self, port: serial.SerialBase) -> None:
        self._port = port

    @classmethod
    def open(cls, opener: Any) -> _SerialConnection:
        try:
            return cls(opener())
        except (serial.SerialException, ValueError) as exc:
            raise OSError(str(exc)) from exc

    def read(self, timeout: float) -> bytes:
        if self._port.timeout != timeout:
            # rfc2217 sends its settings again on every change: only when it changes.
            self._port.timeout = timeout
        try:
            data: bytes = self._port.read(1)
            if data and self._port.in_waiting:
                data += self._port.read(self._port.in_waiting)
        except (serial.SerialException, OSError) as exc:
            raise ConsoleClosed(str(exc) or type(exc).__name__) from exc
        return data

    def write(self, data: bytes) -> None:
        try:
            self._port.write(data)
        except serial.SerialException as exc:
            raise OSError(str(exc)) from exc

    def close(self) -> None:
        with contextlib.suppress(serial.SerialException, OSError):
            self._port.close()


# -- IPMI Serial-over-LAN ------------------------------------------------------------------


@dataclass(frozen=True)
class SOLPort:
    bmc: BMC
    speed: int = 115200

    @property
    def endpoint(self) -> str:
        return f"ipmi-sol://{host_port(self.bmc.address, self.bmc.port)}"

    def connect(self, timeout: float) -> ConsoleConnection:
        tool = IPMITool(self.bmc, retries=1, call_timeout=timeout)
        try:
            argv, env = tool.command(["sol", "activate"])
        except ConfigError as error:  # e.g. the password file is not there (yet)
            raise OSError(str(error)) from None
        # A BMC serves one SOL session: one left behind (a killed run, a person's
        # terminal) would refuse ours. "Already de-activated" is an error exit too.
        with contextlib.suppress(BMCError):
            tool.run("sol", "deactivate")
        return _SOLConnection.start(argv, env, timeout)


class _SOLConnection:
    """`ipmitool sol activate` on a pty: ipmitool needs a terminal for its raw mode, and
    prints its banner at once there; raw mode keeps every byte as the BMC sent it."""

    def __init__(self, process: subprocess.Popen[bytes], terminal: int) -> None:
        self._process = process
        self._terminal = terminal
        self._pending = b""  # console bytes that came with the banner
        self._line_start = True  # ipmitool takes `~` at a line start as its escape

    @classmethod
    def start(cls, argv: list[str], env: dict[str, str], timeout: float) -> _SOLConnection:
        terminal, child_end = os.openpty()
        try:
            tty.setraw(child_end)
            process = subprocess.Popen(
                argv, env=env, stdin=child_end, stdout=child_end, stderr=subprocess.PIPE,
                start_new_session=True)
        except BaseException:
            os.close(terminal)
            raise
        finally:
            os.close(child_end)
        connection = cls(process, terminal)
        try:
            connection._await_banner(timeout)
        except BaseException:
            connection.close()
            raise
        return connection

    def _await_banner(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        received = b""
        while (banner := SOL_BANNER.search(received)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"ipmitool sol activate: no session within {timeout:g} s")
            try:
                received += self._read_terminal(remaining)
            except ConsoleClosed as closed:
                raise OSError(f"ipmitool sol activate failed: {closed}") from None
        self._pending = received[banner.end():]

    def _read_terminal(self, timeout: float) -> bytes:
        if not select.select([self._terminal], [], [], timeout)[0]:
            return b""
        try:
            data = os.read(self._terminal, 65536)
        except OSError as exc:
            if exc.errno != errno.EIO:  # EIO: ipmitool has exited
                raise
            data = b""
        if not data:
            raise ConsoleClosed(self._exit_reason())
        return data

    def _exit_reason(self) -> str:
        try:
            code = self._process.wait(WRITE_TIMEOUT)
        except subprocess.TimeoutExpired:
            return "ipmitool closed its terminal"
        assert self._process.stderr is not None
        lines = [line for line in self._process.stderr.read().decode(errors="replace")
                 .splitlines() if line.strip() and not line.startswith("tcgetattr")]
        return f"ipmitool exited with {code}" + (f": {lines[-1].strip()}" if lines else "")

    def read(self, timeout: float) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        return self._read_terminal(timeout)

    def write(self, data: bytes) -> None:
        data = self._escaped(data)
        while data:
            data = data[os.write(self._terminal, data):]

    def _escaped(self, data: bytes) -> bytes:
        """`~` doubled where ipmitool would take it for its escape (`~.` ends the session)."""
        out = bytearray()
        for byte in data:
            if byte == ord("~") and self._line_start:
                out.append(byte)
            out.append(byte)
            self._line_start = byte in b"\r\n"
        return bytes(out)

    def close(self) -> None:
        if self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(WRITE_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stderr is not None:
            self._process.stderr.close()
        os.close(self._terminal)
