"""Commands on a host over SSH (paramiko), each one kept in a transcript.

Every command the harness runs on a host is recorded with its exit code, duration and
output (DESIGN principle 7), and secrets given to the host are redacted from it.
"""

from __future__ import annotations

import base64
import logging
import select
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import paramiko

from .errors import HarnessError, InfrastructureError
from .lab import SSHEndpoint

log = logging.getLogger(__name__)


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
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self.on_command = on_command
        self.secrets = secrets
        self._client: paramiko.SSHClient | None = None

    def _connect(self, timeout: float) -> paramiko.SSHClient:
        endpoint = self.endpoint
        client = paramiko.SSHClient()
        if endpoint.host_key_file is not None:
            keytype, key = endpoint.host_key_file.read_text().split()[:2]
            name = (endpoint.address if endpoint.port == 22
                    else f"[{endpoint.address}]:{endpoint.port}")
            client.get_host_keys().add(
                name, keytype, paramiko.PKey.from_type_string(keytype, base64.b64decode(key)))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            # No pinned key in the lab file: lab hosts are reinstalled all the time.
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            client.connect(
                endpoint.address, port=endpoint.port, username=endpoint.username,
                key_filename=str(endpoint.key_file) if endpoint.key_file else None,
                look_for_keys=endpoint.key_file is None, allow_agent=False,
                timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
            )
        except paramiko.BadHostKeyException as error:
            client.close()
            raise SSHUnavailable(
                f"{self.name}: SSH host key of {endpoint.address}:{endpoint.port} does not "
                f"match {endpoint.host_key_file}: {error}") from None
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
        transport = self._client.get_transport() if self._client else None
        if transport is None or not transport.is_active():
            self.close()
            self._client = self._connect(timeout)
        assert self._client is not None
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def wait_ready(self, timeout: float, interval: float = 2.0) -> float:
        """Retry until sshd accepts us and runs `true`; return the seconds it took."""
        start = time.monotonic()
        while True:
            try:
                self.client(timeout=min(10.0, timeout))
                self.run("true", timeout=min(30.0, timeout))
                return time.monotonic() - start
            except (SSHUnavailable, CommandFailed) as error:
                if time.monotonic() - start + interval > timeout:
                    raise SSHUnavailable(
                        f"{self.name}: SSH not ready within {timeout:.0f} s: {error}") from None
                time.sleep(interval)

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "********")
        return text

    def _open_channel(self, command: str) -> paramiko.Channel:
        """A session running `command`. A connection that went stale (the host was reset
        under it) fails here, before the command ran: reconnect once and open again."""
        for attempt in (1, 2):
            try:
                transport = self.client().get_transport()
                assert transport is not None
                channel = transport.open_session(timeout=30)
                channel.exec_command(command)
                return channel
            except (OSError, paramiko.SSHException, EOFError) as error:
                self.close()
                if attempt == 2:
                    raise SSHUnavailable(f"{self.name}: SSH session failed for `{command}`: "
                                         f"{_describe(error)}") from None
        raise AssertionError("unreachable")

    def run(self, command: str, *, timeout: float = 60.0, check: bool = True,
            stdin: bytes | None = None) -> CommandResult:
        """Run `command` in the host's shell; raise CommandFailed unless it exits 0
        (when `check`)."""
        started = datetime.now(UTC)
        start = time.monotonic()
        channel = self._open_channel(command)
        if stdin is not None:
            channel.sendall(stdin)
        channel.shutdown_write()
        stdout, stderr = bytearray(), bytearray()
        exit_status: int | None = None
        deadline = start + timeout
        try:
            while True:
                while channel.recv_ready():
                    stdout += channel.recv(65536)
                while channel.recv_stderr_ready():
                    stderr += channel.recv_stderr(65536)
                if channel.exit_status_ready() and not (
                        channel.recv_ready() or channel.recv_stderr_ready()):
                    exit_status = channel.recv_exit_status()
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                select.select([channel], [], [], min(remaining, 0.5))
        except (OSError, paramiko.SSHException) as error:
            self.close()
            raise SSHUnavailable(f"{self.name}: SSH connection lost during `{command}`: "
                                 f"{_describe(error)}") from None
        finally:
            channel.close()
        result = CommandResult(
            host=self.name,
            command=self._redact(command),
            exit_status=exit_status,
            stdout=self._redact(stdout.decode(errors="replace")),
            stderr=self._redact(stderr.decode(errors="replace")),
            started=started,
            duration=time.monotonic() - start,
        )
        log.debug("%s", result.render())
        if self.on_command is not None:
            self.on_command(result)
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def put(self, local: Path, remote: str) -> None:
        with self.client().open_sftp() as sftp:
            sftp.put(str(local), remote)

    def get(self, remote: str, local: Path) -> None:
        with self.client().open_sftp() as sftp:
            sftp.get(remote, str(local))
