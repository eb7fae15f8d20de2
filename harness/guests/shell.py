"""Commands in a guest over SSH, tunnelled through its host's SSH connection.

The controller usually has no route to a guest's network; dom0 has. The guest's SSH
session runs inside a `direct-tcpip` channel that dom0's sshd opens to guest:22 (SSH
port forwarding, on the connection the harness already has), so dom0 needs no extra
tools and the guest no route. Commands land in the host's transcripts (the test's),
under the guest's name, like every command on a host.
"""

from __future__ import annotations

from pathlib import Path

import paramiko

from ..host import Host
from ..host_keys import HostKeyRefused, changed_key, trust_only_lab_keys
from ..lab import SSHEndpoint
from ..remote import CommandResult, RemoteHost, SSHUnavailable

GUEST_USER = "root"
GUEST_SSH_PORT = 22


class GuestShell(RemoteHost):
    """An SSH connection to a guest via its host (`via`, changed when it migrates)."""

    def __init__(self, name: str, address: str, via: Host, host_key_file: Path) -> None:
        super().__init__(
            name,
            SSHEndpoint(address, GUEST_SSH_PORT, GUEST_USER, via.spec.ssh.key_file,
                        host_key_file),
            on_command=self._record,
            health=via.health,  # the guest lives on its host: the host's faults end its commands
        )
        self.via = via

    def _record(self, result: CommandResult) -> None:
        for transcript in self.via.transcripts:
            transcript.add(result)

    def answers(self, timeout: float) -> bool:
        """The guest's sshd lets us in now."""
        try:
            self.client(timeout)
        except SSHUnavailable:
            return False
        return True

    def _connect(self, timeout: float) -> paramiko.SSHClient:
        endpoint = self.endpoint
        target = (endpoint.address, endpoint.port)
        try:
            transport = self.via.remote.client(timeout).get_transport()
            if transport is None:
                raise SSHUnavailable(f"{self.via.name}: no SSH transport")
            channel = transport.open_channel("direct-tcpip", target, ("127.0.0.1", 0),
                                             timeout=timeout)
        except (OSError, paramiko.SSHException, EOFError) as error:
            raise SSHUnavailable(
                f"{self.name}: {self.via.name} cannot connect to {target[0]}:{target[1]}: "
                f"{error or type(error).__name__}") from None
        client = paramiko.SSHClient()
        trust_only_lab_keys(client, self.name, endpoint)  # the key pinned in its image
        try:
            client.connect(
                endpoint.address, port=endpoint.port, username=endpoint.username,
                key_filename=str(endpoint.key_file) if endpoint.key_file else None,
                look_for_keys=endpoint.key_file is None, allow_agent=False, sock=channel,
                timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
            )
        except HostKeyRefused:
            client.close()
            channel.close()
            raise
        except paramiko.BadHostKeyException as error:
            client.close()
            channel.close()
            raise changed_key(self.name, endpoint, error.key, error.expected_key) from None
        except (OSError, paramiko.SSHException, EOFError) as error:
            client.close()
            channel.close()
            raise SSHUnavailable(
                f"{self.name}: SSH to {endpoint.address} via {self.via.name} failed: "
                f"{error or type(error).__name__}") from None
        return client
