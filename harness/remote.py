"""Commands and files on a host over SSH (paramiko), each command kept in a transcript.

Every command the harness runs on a host is recorded with its exit code, duration and
output, as a failure's evidence, and secrets given to the host are redacted from it.

Every operation has a deadline, so a dead host cannot stall a run. paramiko blocks
without one in places (exec_command waits for the server's reply, SFTP waits for its
responses), so each operation runs under a timer that closes the connection when the
deadline passes; the blocked call then fails and is reported as a timeout. With a
`HostHealth`, a fault of the host (a crash on com1, a hang) ends the operation at once
and is what it raises.
"""

from __future__ import annotations

import contextlib
import logging
import select
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import paramiko

from .errors import HarnessError, InfrastructureError
from .health import HostHealth
from .host_keys import HostKeyRefused, changed_key, trust_only_lab_keys
from .lab import SSHEndpoint

log = logging.getLogger(__name__)

KEEPALIVE_INTERVAL = 10  # s; keeps NAT and firewall state of idle connections alive
OUTPUT_LIMIT = 16 * 1024 * 1024  # bytes of stdout (and of stderr) kept per command
TRUNCATED = "\n[... output truncated by xen-hil: more than {} bytes ...]\n"
SFTP_CHUNK_TIMEOUT = 60.0  # s one SFTP request may wait for its response


@dataclass(frozen=True)
class CommandResult:
    host: str
    command: str
    exit_status: int | None  # None: killed at the timeout
    stdout: str
    stderr: str
    started: datetime
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def render(self) -> str:
        status = "TIMEOUT" if self.exit_status is None else f"exit {self.exit_status}"
        parts = [f"[{self.started:%H:%M:%S}] {self.host}# {self.command}",
                 f"  -> {status} in {self.duration:.2f} s"]
        if self.stdout:
            parts.append(self.stdout.rstrip("\n"))
        if self.stderr:
            parts.append("--- stderr ---\n" + self.stderr.rstrip("\n"))
        return "\n".join(parts)


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


class CommandFailed(HarnessError):
    """A command exited non-zero (or timed out) where success was required."""

    def __init__(self, result: CommandResult) -> None:
        status = ("timed out" if result.exit_status is None
                  else f"exited {result.exit_status}")
        detail = (result.stderr or result.stdout).strip()[-2000:]
        super().__init__(f"{result.host}: `{result.command}` {status}: {detail}")
        self.result = result


class SSHUnavailable(InfrastructureError):
    """The host's sshd could not be reached or refused us."""


class SSHTimeout(SSHUnavailable):
    """An SSH or SFTP operation got no answer before its deadline."""


@dataclass
class Transcript:
    """The commands of one scope (a test, a step), in order."""

    entries: list[CommandResult] = field(default_factory=list)

    def add(self, result: CommandResult) -> None:
        self.entries.append(result)

    def render(self) -> str:
        return "\n\n".join(entry.render() for entry in self.entries) + "\n"


class RemoteHost:
    """An SSH connection to one host, reconnected on demand."""

    def __init__(
        self,
        name: str,
        endpoint: SSHEndpoint,
        *,
        on_command: Callable[[CommandResult], None] | None = None,
        secrets: tuple[str, ...] = (),
        health: HostHealth | None = None,
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self.on_command = on_command
        self.secrets = secrets
        self.health = health
        self._client: paramiko.SSHClient | None = None
        self._client_lock = threading.Lock()
        self._connect_lock = threading.Lock()
        self._sftp_lock = threading.Lock()
        self._sftp: paramiko.SFTPClient | None = None
        self._sftp_owner: paramiko.SSHClient | None = None  # the client it runs on
        self._connecting: paramiko.SSHClient | None = None  # close() ends its handshake too

    def _connect(self, timeout: float) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        self._connecting = client
        try:
            return self._handshake(client, timeout)
        finally:
            self._connecting = None

    def _handshake(self, client: paramiko.SSHClient, timeout: float) -> paramiko.SSHClient:
        endpoint = self.endpoint
        trust_only_lab_keys(client, self.name, endpoint)
        try:
            client.connect(
                endpoint.address, port=endpoint.port, username=endpoint.username,
                key_filename=str(endpoint.key_file) if endpoint.key_file else None,
                look_for_keys=endpoint.key_file is None, allow_agent=False,
                timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
            )
        except HostKeyRefused:
            client.close()
            raise
        except paramiko.BadHostKeyException as error:
            client.close()
            raise changed_key(self.name, endpoint, error.key, error.expected_key) from None
        except paramiko.AuthenticationException as error:
            client.close()
            raise SSHUnavailable(
                f"{self.name}: SSH login as {endpoint.username} refused ({error}); check "
                f"ssh_key_file ({endpoint.key_file})") from None
        except (OSError, paramiko.SSHException, EOFError) as error:
            client.close()
            raise SSHUnavailable(
                f"{self.name}: cannot reach sshd at {endpoint.address}:{endpoint.port}: "
                f"{_describe(error)}") from None
        return client

    def client(self, timeout: float = 30.0) -> paramiko.SSHClient:
        self._check_health()
        client = self._usable_client()
        if client is not None:
            return client
        # One thread connects; another that finds no connection waits for it (closing
        # first, it would end the handshake under way).
        if not self._connect_lock.acquire(timeout=timeout):
            raise SSHTimeout(f"{self.name}: connecting took another thread over "
                             f"{timeout:.0f} s")
        try:
            client = self._usable_client()
            if client is None:
                self.close()
                client = self._connect(timeout)
                transport = client.get_transport()
                if transport is not None:
                    transport.set_keepalive(KEEPALIVE_INTERVAL)
                with self._client_lock:
                    self._client = client
            return client
        finally:
            self._connect_lock.release()

    def _usable_client(self) -> paramiko.SSHClient | None:
        client = self._client
        transport = client.get_transport() if client else None
        return client if transport is not None and transport.is_active() else None

    def close(self) -> None:
        """Close the connection; safe from any thread (a watcher aborting the host's
        operations calls it while they block on the connection)."""
        with self._client_lock:
            client, self._client = self._client, None
            self._sftp = self._sftp_owner = None
        for connection in (client, self._connecting):
            if connection is not None:
                connection.close()  # and with it the SFTP session

    def _check_health(self) -> None:
        if self.health is not None:
            self.health.check()

    @contextlib.contextmanager
    def _deadline(self, seconds: float, what: str) -> Iterator[None]:
        """Run the body with a deadline: when it passes, the connection is closed so
        that whatever blocks on it fails; that failure becomes SSHTimeout (or the
        host's fault, if it has one)."""
        expired = threading.Event()
        start = time.monotonic()

        def expire() -> None:
            expired.set()
            self.close()

        timer = threading.Timer(seconds, expire)
        timer.daemon = True
        timer.start()
        try:
            yield
        except (OSError, paramiko.SSHException, EOFError, SSHUnavailable) as error:
            self._check_health()
            # paramiko's own timeouts (open_session, connect) may fire just before the
            # timer: past the deadline, either way it is the host not answering.
            if expired.is_set() or time.monotonic() - start >= seconds:
                raise SSHTimeout(f"{self.name}: no answer within {seconds:.0f} s to "
                                 f"{what}") from None
            if isinstance(error, SSHUnavailable):
                raise
            self.close()
            raise SSHUnavailable(f"{self.name}: SSH failed during {what}: "
                                 f"{_describe(error)}") from None
        finally:
            timer.cancel()
        self._check_health()

    def wait_ready(self, timeout: float, interval: float = 2.0) -> float:
        """Retry until sshd accepts us and runs `true`; return the seconds it took."""
        start = time.monotonic()
        while True:
            try:
                self.client(timeout=min(10.0, timeout))
                self.run("true", timeout=min(30.0, timeout))
                return time.monotonic() - start
            except (SSHUnavailable, CommandFailed) as error:
                self._check_health()
                if time.monotonic() - start + interval > timeout:
                    raise SSHUnavailable(
                        f"{self.name}: SSH not ready within {timeout:.0f} s: {error}") from None
                self._sleep(interval)

    def _sleep(self, seconds: float) -> None:
        if self.health is not None:
            self.health.sleep(seconds)
        else:
            time.sleep(seconds)

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret:  # "" would be "found" between every two characters
                text = text.replace(secret, "********")
        return text

    def _open_channel(self, command: str, timeout: float) -> paramiko.Channel:
        """A session running `command`. A connection that went stale (the host was reset
        under it) fails here, before the command ran: reconnect once and open again."""
        deadline = time.monotonic() + timeout  # both attempts together
        for attempt in (1, 2):
            left = max(deadline - time.monotonic(), 1.0)
            try:
                with self._deadline(left, f"starting `{self._redact(command)}`"):
                    transport = self.client(left).get_transport()
                    if transport is None:
                        raise SSHUnavailable(f"{self.name}: no SSH transport")
                    channel = transport.open_session(timeout=left)
                    channel.exec_command(command)
                    return channel
            except SSHTimeout:
                raise
            except SSHUnavailable as error:
                if attempt == 2:
                    raise SSHUnavailable(f"{self.name}: SSH session failed for "
                                         f"`{self._redact(command)}`: "
                                         f"{error}") from None
        raise AssertionError("unreachable")

    def run(self, command: str, *, timeout: float = 60.0, check: bool = True,
            stdin: bytes | None = None) -> CommandResult:
        """Run `command` in the host's shell; raise CommandFailed unless it exits 0
        (when `check`). After `timeout` the command counts as timed out (exit status
        None); a fault of the host ends it at once, raising the fault."""
        started = datetime.now(UTC)
        start = time.monotonic()
        deadline = start + timeout
        channel = self._open_channel(command, timeout=min(timeout, 60.0))
        stdout, stderr = bytearray(), bytearray()
        exit_status: int | None = None
        try:
            channel.settimeout(max(deadline - time.monotonic(), 1.0))
            if stdin is not None:
                channel.sendall(stdin)
            channel.shutdown_write()
            while True:
                self._check_health()
                while channel.recv_ready():
                    _append_capped(stdout, channel.recv(65536))
                while channel.recv_stderr_ready():
                    _append_capped(stderr, channel.recv_stderr(65536))
                if channel.exit_status_ready() and not (
                        channel.recv_ready() or channel.recv_stderr_ready()):
                    exit_status = channel.recv_exit_status()
                    break
                if channel.closed:
                    raise EOFError("the connection closed before the command ended")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                select.select([channel], [], [], min(remaining, 0.5))
        except (OSError, paramiko.SSHException, EOFError) as error:
            self.close()
            self._check_health()
            raise SSHUnavailable(f"{self.name}: SSH connection lost during "
                                 f"`{self._redact(command)}`: "
                                 f"{_describe(error)}") from None
        finally:
            channel.close()
        result = CommandResult(
            host=self.name,
            command=self._redact(command),
            exit_status=exit_status,
            stdout=self._redact(_text(stdout)),
            stderr=self._redact(_text(stderr)),
            started=started,
            duration=time.monotonic() - start,
        )
        log.debug("%s", result.render())
        if self.on_command is not None:
            self.on_command(result)
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    @contextlib.contextmanager
    def sftp(self, timeout: float, what: str) -> Iterator[paramiko.SFTPClient]:
        """The connection's SFTP session, for one job that must be done within
        `timeout`. One session is kept: a new one per console poll would start an
        sftp-server on the host every second."""
        # paramiko's SFTP client drops a reply another thread waits for: one job at a
        # time uses the session (guests booting side by side read consoles). The wait
        # is outside the job's deadline, whose expiry closes the connection under the
        # job that holds the session.
        if not self._sftp_lock.acquire(timeout=timeout):
            raise SSHTimeout(f"{self.name}: the SFTP session stayed busy for "
                             f"{timeout:.0f} s; not {what}")
        try:
            with self._deadline(timeout, what):
                client = self.client(min(timeout, 30.0))
                with self._client_lock:
                    session = self._sftp if self._sftp_owner is client else None
                if session is None:
                    session = client.open_sftp()
                    with self._client_lock:
                        self._sftp, self._sftp_owner = session, client
                channel = session.get_channel()
                if channel is not None:
                    channel.settimeout(min(timeout, SFTP_CHUNK_TIMEOUT))
                yield session
        finally:
            self._sftp_lock.release()

    def put(self, local: Path, remote: str, timeout: float = 600.0) -> None:
        with self.sftp(timeout, f"copying {local} to {remote}") as sftp:
            sftp.put(str(local), remote, callback=self._progress)

    def get(self, remote: str, local: Path, timeout: float = 600.0) -> None:
        with self.sftp(timeout, f"copying {remote} to {local}") as sftp:
            sftp.get(remote, str(local), callback=self._progress)

    def _progress(self, done: int, total: int) -> None:
        """Between chunks of a transfer: a fault of the host ends it."""
        self._check_health()

    def stat_size(self, path: str, timeout: float = 60.0) -> int | None:
        """The size of a file on the host, None if it does not exist."""
        with self.sftp(timeout, f"stat {path}") as sftp:
            try:
                return sftp.stat(path).st_size
            except FileNotFoundError:
                return None

    def read(self, path: str, *, offset: int = 0, size: int | None = None,
             limit: int = OUTPUT_LIMIT, timeout: float = 60.0) -> bytes:
        """Bytes of a file on the host from `offset` (b"" if it does not exist). Of
        more than `limit` bytes only the last `limit` are read."""
        with self.sftp(timeout, f"reading {path}") as sftp:
            try:
                with sftp.open(path, "rb") as f:
                    end = (f.stat().st_size or 0) if size is None else offset + size
                    start = max(offset, end - limit)
                    f.seek(start)
                    return f.read(max(end - start, 0))
            except FileNotFoundError:
                return b""


def _append_capped(buffer: bytearray, data: bytes) -> None:
    """Append up to OUTPUT_LIMIT bytes; what goes over is dropped and marked."""
    room = OUTPUT_LIMIT - len(buffer)
    if room > 0:
        buffer += data[:room]
        if len(data) > room:
            buffer += TRUNCATED.format(OUTPUT_LIMIT).encode()


def _text(data: bytearray) -> str:
    return data.decode(errors="replace")
