"""Notices a host that stopped answering, was powered off behind our back, or whose BMC
died, while tests use it; reports it to the host's HostHealth.

A thread per host. While the host is meant to be up it reads sshd's banner on a fresh
TCP connection every `probe_interval` (cheap, bounded, independent of the connections
the tests use). When sshd has not answered for the hang timeout:
- the BMC reports power off: HostPoweredOff (nobody asked: intended power actions
  disarm the monitor first);
- com1 was silent too: HostHung (a frozen machine prints nothing and answers nothing);
- com1 still prints after three hang timeouts: HostHung as well, naming the output.
The BMC is asked for the power state every `bmc_interval` whether or not the host is
up: a BMC that stops answering makes the host BROKEN for the rest of the run, since
nothing could power cycle it back.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

from .errors import HarnessError
from .health import HostBroken, HostHealth, HostHung, HostPoweredOff

log = logging.getLogger(__name__)

PROBE_INTERVAL = 5.0  # s between two banner probes
PROBE_TIMEOUT = 5.0  # s one banner probe may take (sshd answers in well under 1 s)
BMC_INTERVAL = 15.0  # s between two BMC power state reads


def ssh_banner(address: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """sshd at address:port sends its banner ("SSH-2.0-...") within `timeout`."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            received = b""
            while not received.startswith(b"SSH-") and len(received) < 4:
                sock.settimeout(max(deadline - time.monotonic(), 0.01))
                data = sock.recv(256)
                if not data:
                    return False
                received += data
            return received.startswith(b"SSH-")
    except OSError:
        return False


class LivenessMonitor:
    def __init__(
        self,
        name: str,
        health: HostHealth,
        *,
        ssh_answers: Callable[[], bool],
        powered_on: Callable[[], bool],
        console_bytes: Callable[[], int],
        hang_timeout: float,
        probe_interval: float = PROBE_INTERVAL,
        bmc_interval: float = BMC_INTERVAL,
    ) -> None:
        self.name = name
        self.health = health
        self.ssh_answers = ssh_answers
        self.powered_on = powered_on
        self.console_bytes = console_bytes
        self.hang_timeout = hang_timeout
        self.probe_interval = probe_interval
        self.bmc_interval = bmc_interval
        self._armed = False
        self._armed_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._answered_at = 0.0
        self._console_seen = (0, 0.0)  # com1 byte count, and since when it is that

    def arm(self) -> None:
        """The host is up (SSH answered): watch it from now on."""
        with self._armed_lock:
            self._armed = True
            self._answered_at = time.monotonic()

    def verdict_due(self) -> float:
        """Monotonic time by which a host that stopped answering is declared hung (now,
        if it is answering or not watched): how long a failed SSH operation is worth
        waiting for the verdict that explains it."""
        with self._armed_lock:
            if not self._armed:
                return time.monotonic()
            return self._answered_at + self.hang_timeout + self.probe_interval \
                + PROBE_TIMEOUT + 1

    def disarm(self) -> None:
        """A power action or a boot is under way: silence and power off are expected."""
        with self._armed_lock:
            self._armed = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"liveness-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = PROBE_TIMEOUT + 5) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        next_bmc = time.monotonic()
        while not self._stop.wait(self.probe_interval):
            count = self.console_bytes()
            if count != self._console_seen[0]:
                self._console_seen = (count, time.monotonic())
            try:
                if time.monotonic() >= next_bmc:
                    next_bmc = time.monotonic() + self.bmc_interval
                    self._check_bmc()
                if self._armed:
                    self._check_answering()
            except Exception:  # the monitor must outlive surprises; they are logged
                log.exception("%s: liveness monitor", self.name)

    def _check_bmc(self) -> None:
        if self.health.broken is not None:
            return
        try:
            on = self.powered_on()
        except HarnessError as error:
            self.health.fault(HostBroken(
                f"{self.name}: BMC stopped answering, so nothing can power cycle the host: "
                f"{error}"))
            return
        with self._armed_lock:
            if self._armed and not on and self.health.current is None:
                self.health.fault(HostPoweredOff(
                    f"{self.name}: the BMC reports power off, and the harness did not ask "
                    "for it"))

    def _check_answering(self) -> None:
        if self.health.current is not None:
            return
        answered = self.ssh_answers()
        with self._armed_lock:
            if not self._armed:
                return
            now = time.monotonic()
            if answered:
                self._answered_at = now
                return
            unanswered = now - self._answered_at
        console_quiet = now - self._console_seen[1]
        if unanswered < self.hang_timeout:
            return
        self._check_bmc()
        if self.health.current is not None:
            return
        if console_quiet >= self.hang_timeout:
            self.health.fault(HostHung(
                f"{self.name}: host hung: no SSH answer for {unanswered:.0f} s and no com1 "
                f"output for {console_quiet:.0f} s (hang timeout {self.hang_timeout:.0f} s)"))
        elif unanswered >= 3 * self.hang_timeout:
            self.health.fault(HostHung(
                f"{self.name}: host hung: no SSH answer for {unanswered:.0f} s, while com1 "
                f"still prints"))
