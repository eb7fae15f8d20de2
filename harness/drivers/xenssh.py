"""labgrid CommandProtocol and FileTransferProtocol over the harness's SSH connection.

labgrid's SSHDriver runs OpenSSH's client. The harness needs more of every operation
on a host: a deadline, the command in the running test's transcript, and the host's
faults (a crash on com1, a hang) ending it at once. That is harness.remote.RemoteHost,
and this driver is labgrid's face of it: the boot strategy binds it as its shell, and
labgrid tooling can `run`, `run_check`, `put` and `get` through it.

The connection is the host's: harness.host.Host hands its RemoteHost over with
`use()`, keys and health included. Without one (labgrid tooling on a lab file), the
driver connects from the NetworkService resource alone, with the user's SSH keys.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any, ClassVar

import attr
from labgrid.driver.commandmixin import CommandMixin
from labgrid.driver.common import Driver
from labgrid.factory import target_factory
from labgrid.protocol import CommandProtocol, FileTransferProtocol
from labgrid.step import step

from ..lab import SSHEndpoint
from ..remote import RemoteHost


@target_factory.reg_driver
@attr.s(eq=False)
class XenSSHDriver(CommandMixin, Driver, CommandProtocol, FileTransferProtocol):
    """Commands and files on dom0 over the bound NetworkService."""

    bindings: ClassVar[dict[str, Any]] = {"service": "NetworkService"}

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.remote: RemoteHost | None = None

    def use(self, remote: RemoteHost) -> None:
        """Run everything through `remote` (the host's connection)."""
        self.remote = remote

    def on_activate(self) -> None:
        if self.remote is None:
            service = self.service
            self.remote = RemoteHost(self.target.name, SSHEndpoint(
                service.address, service.port, service.username, None, None))

    def _remote(self) -> RemoteHost:
        assert self.remote is not None, "driver not active"
        return self.remote

    def _run(self, cmd: str, *, timeout: float = 30.0, codec: str = "utf-8",
             decodeerrors: str = "strict") -> tuple[list[str], list[str], int]:
        result = self._remote().run(cmd, timeout=timeout, check=False)
        status = -1 if result.exit_status is None else result.exit_status  # -1: timed out
        return result.stdout.splitlines(), result.stderr.splitlines(), status

    @Driver.check_active
    @step(args=["cmd"], result=True)
    def run(self, cmd: str, *, timeout: float = 30.0, codec: str = "utf-8",
            decodeerrors: str = "strict") -> tuple[list[str], list[str], int]:
        return self._run(cmd, timeout=timeout, codec=codec, decodeerrors=decodeerrors)

    def get_status(self) -> int:
        """1: usable (labgrid's convention); connecting happens per operation."""
        return 1

    @Driver.check_active
    @step(args=["timeout"])
    def wait_ready(self, timeout: float) -> float:
        """Until sshd lets us in and runs a command; the seconds it took."""
        return self._remote().wait_ready(timeout)

    @Driver.check_active
    @step(args=["filename", "remotepath"])
    def put(self, filename: str, remotepath: str | None = None) -> None:
        self._remote().put(Path(filename), remotepath or posixpath.basename(filename))

    @Driver.check_active
    @step(args=["filename", "destination"])
    def get(self, filename: str, destination: str = ".") -> None:
        target = Path(destination)
        if target.is_dir():
            target = target / posixpath.basename(filename)
        self._remote().get(filename, target)
