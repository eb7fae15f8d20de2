"""A console server in front of a virtual host's com1, as a real lab has one: ser2net in
RFC 2217 mode, its serial device a pty joined to QEMU's com1 socket (`SerialLine`).

ser2net's RFC 2217 needs a device with serial settings (its tcp connector refuses
pyserial's baud rate), and it answers a device that cannot be opened with an error
text in the console stream; so the device is a pty that exists for the whole test,
like a cable that outlives the machine's power cycles.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

# pyserial's RFC 2217 open ends by purging what the server has received (measured:
# about 0.5 s after ser2net opens the device): QEMU's first byte must come later.
SETTLE = 2.0  # s
START_TIMEOUT = 10.0  # s, for ser2net to listen


class SerialLine:
    """A pty whose slave is the console server's serial device, joined to QEMU's com1
    socket server while the server has the device open. QEMU waits for this
    connection before its machine runs (`wait=on`), so the machine starts only once
    the recorder is behind ser2net; when QEMU ends (power off) the line waits for the
    next one, and when ser2net closes the device the QEMU connection is dropped."""

    def __init__(self, device_link: Path, com1: tuple[str, int],
                 settle: float = SETTLE) -> None:
        self.link = device_link
        self.com1 = com1
        self.settle = settle
        self._master, slave = os.openpty()
        tty.setraw(slave)  # bytes pass as they are: no echo, no CR/LF translation
        self.link.symlink_to(os.ttyname(slave))
        # With no slave open, the master reports a hangup: that is how we see ser2net.
        os.close(slave)
        os.set_blocking(self._master, False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serial-line", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        os.close(self._master)
        self.link.unlink(missing_ok=True)

    def _device_open(self) -> bool:
        poller = select.poll()
        poller.register(self._master, select.POLLIN)
        return not any(events & select.POLLHUP for _, events in poller.poll(0))

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._device_open():
                self._stop.wait(0.1)
                continue
            self._stop.wait(self.settle)
            try:
                qemu = socket.create_connection(self.com1, timeout=1.0)
            except OSError:  # the machine is off
                self._stop.wait(0.2)
                continue
            with qemu:
                self._pump(qemu)

    def _pump(self, qemu: socket.socket) -> None:
        """Bytes both ways until QEMU ends or the device is closed (EIO on the master)."""
        qemu.settimeout(5.0)  # sends only: reads follow readiness
        while not self._stop.is_set():
            ready = select.select([self._master, qemu.fileno()], [], [], 0.2)[0]
            try:
                if qemu.fileno() in ready:
                    data = qemu.recv(65536)
                    if not data:
                        return
                    self._to_device(data)
                if self._master in ready:
                    qemu.sendall(os.read(self._master, 65536))
            except BlockingIOError:  # readiness that went away
                continue
            except OSError:
                return

    def _to_device(self, data: bytes) -> None:
        while data and not self._stop.is_set():
            if select.select([], [self._master], [], 0.2)[1]:
                with contextlib.suppress(BlockingIOError):
                    data = data[os.write(self._master, data):]


class Ser2net:
    """ser2net serving `device` with telnet and RFC 2217 on address:port, as a lab's
    console server does; started and stopped by its PID."""

    def __init__(self, device: Path, address: str, port: int, directory: Path) -> None:
        self.address, self.port = address, port
        self.config = directory / "ser2net.yaml"
        self.config.write_text(
            "connection: &console\n"
            f"  accepter: telnet(rfc2217),tcp,{address},{port}\n"
            f"  connector: serialdev,{device},115200n81,local\n")
        self.log = directory / "ser2net.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            # -n: no daemon; -u: no UUCP lock files (a killed ser2net would leave one).
            self.process = subprocess.Popen(
                ["ser2net", "-n", "-u", "-c", str(self.config),
                 "-P", str(self.config.with_suffix(".pid"))],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._listening():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ser2net did not listen on {self.address}:{self.port}: "
                                   f"{self.log.read_text(errors='replace')}")
            time.sleep(0.05)

    def _listening(self) -> bool:
        # Looked up, not probed: a connection would open the device.
        hex_address = socket.inet_aton(self.address)[::-1].hex().upper()
        listener = f"{hex_address}:{self.port:04X} 00000000:0000 0A"
        return listener in Path("/proc/net/tcp").read_text()

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                os.kill(self.process.pid, signum)
            self.process.wait(10)
        self.process = None


@contextlib.contextmanager
def console_server(com1: tuple[str, int], address: str, port: int, directory: Path,
                   settle: float = SETTLE) -> Iterator[Ser2net]:
    """ser2net on address:port in front of the console served at `com1`, through a
    `SerialLine`; both stopped afterwards, whatever happens."""
    if shutil.which("ser2net") is None:
        raise RuntimeError("ser2net is not installed (Debian: apt-get install ser2net; "
                           "make setup)")
    line = SerialLine(directory / f"console-{port}", com1, settle=settle)
    server = Ser2net(line.link, address, port, directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        line.close()

