"""SSH host keys: which keys the lab trusts for a host, and recording a new one.

A host's SSH endpoint is trusted through its pinned public key (`ssh_host_key_file`)
and the lab's known_hosts file (`ssh_known_hosts`, OpenSSH's format, filled by
`xenhil lab trust`). A key found in neither is refused: the machine answering on the
host's address could be any machine, and a build copied to it could report a false
PASS. A refusal is lab breakage (BROKEN), never retried: waiting does not change a key.
"""

from __future__ import annotations

import base64
import os
import socket
import tempfile
from pathlib import Path

import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

from .errors import InfrastructureError
from .lab import SSHEndpoint


class HostKeyRefused(InfrastructureError):
    """The host presented an SSH host key the lab does not trust."""


def known_hosts_name(address: str, port: int) -> str:
    """The name OpenSSH files a host under: `address`, or `[address]:port` off port 22."""
    return address if port == 22 else f"[{address}]:{port}"


def describe_key(key: paramiko.PKey) -> str:
    """`ssh-ed25519 SHA256:...`, as OpenSSH prints a key's fingerprint."""
    return f"{key.get_name()} {key.fingerprint}"


def trusted_keys(endpoint: SSHEndpoint) -> paramiko.HostKeys:
    """The keys the lab trusts for `endpoint`, filed under its known_hosts name (and,
    from the known_hosts file, the other names there)."""
    keys = paramiko.HostKeys()
    _add_trusted(keys, endpoint)
    return keys


def _add_trusted(keys: paramiko.HostKeys, endpoint: SSHEndpoint) -> None:
    if endpoint.host_key_file is not None:
        keytype, data = endpoint.host_key_file.read_text().split()[:2]
        keys.add(known_hosts_name(endpoint.address, endpoint.port), keytype,
                 paramiko.PKey.from_type_string(keytype, base64.b64decode(data)))
    for entry in _entries(endpoint.known_hosts_file):
        for host in entry.hostnames:
            keys.add(host, entry.key.get_name(), entry.key)


def _entries(path: Path | None) -> list[HostKeyEntry]:
    """The plain entries of a known_hosts file. Lines with a marker (@cert-authority,
    @revoked) and lines paramiko cannot read trust nothing."""
    if path is None or not path.exists():
        return []
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("#", "@")):
            continue
        try:
            entry = HostKeyEntry.from_line(line, number)
        except (InvalidHostKey, paramiko.SSHException, ValueError):
            continue
        if entry is not None:
            entries.append(entry)
    return entries


def how_to_trust(name: str, endpoint: SSHEndpoint) -> str:
    if endpoint.known_hosts_file is not None:
        return (f"if it is {name}, trust it with `xenhil lab trust {name}` (it records the "
                f"key in {endpoint.known_hosts_file})")
    if endpoint.host_key_file is not None:
        return (f"if {name} was reinstalled, put its new public key in "
                f"{endpoint.host_key_file}")
    return (f"name a known_hosts file for {name} in the lab file (ssh_known_hosts) and "
            f"trust its key with `xenhil lab trust {name}`")


def unknown_key(name: str, endpoint: SSHEndpoint, key: paramiko.PKey) -> HostKeyRefused:
    source = (f"{endpoint.known_hosts_file} has no key for "
              f"{known_hosts_name(endpoint.address, endpoint.port)}"
              if endpoint.known_hosts_file is not None
              else "the lab file trusts no key for it")
    return HostKeyRefused(
        f"{name}: SSH host key of {endpoint.address}:{endpoint.port} is unknown: it "
        f"presented {describe_key(key)}, and {source}; {how_to_trust(name, endpoint)}")


def changed_key(name: str, endpoint: SSHEndpoint, presented: paramiko.PKey,
                trusted: paramiko.PKey) -> HostKeyRefused:
    return HostKeyRefused(
        f"{name}: SSH host key of {endpoint.address}:{endpoint.port} is not the one the lab "
        f"trusts: it presented {describe_key(presented)}, the lab trusts "
        f"{describe_key(trusted)}. Another machine may be answering on its address; "
        f"{how_to_trust(name, endpoint)}")


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    def __init__(self, name: str, endpoint: SSHEndpoint) -> None:
        self.name = name
        self.endpoint = endpoint

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        raise unknown_key(self.name, self.endpoint, key)


def trust_only_lab_keys(client: paramiko.SSHClient, name: str, endpoint: SSHEndpoint) -> None:
    """Make `client` accept the keys the lab trusts for `endpoint` and refuse any other
    with HostKeyRefused (a changed key raises paramiko.BadHostKeyException: pass it to
    `changed_key`)."""
    _add_trusted(client.get_host_keys(), endpoint)
    client.set_missing_host_key_policy(_RefuseUnknown(name, endpoint))


def presented_key(address: str, port: int, timeout: float) -> paramiko.PKey:
    """The host key the sshd at `address`:`port` presents (no login), within `timeout`."""
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as error:
        raise InfrastructureError(f"cannot reach sshd at {address}:{port}: "
                                  f"{error.strerror or error}") from None
    transport = paramiko.Transport(sock)
    transport.banner_timeout = timeout
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except (OSError, paramiko.SSHException, EOFError) as error:
        raise InfrastructureError(f"no SSH host key from {address}:{port} within "
                                  f"{timeout:.0f} s: {error or type(error).__name__}") from None
    finally:
        transport.close()


def record_key(known_hosts: Path, address: str, port: int, key: paramiko.PKey) -> None:
    """Make `key` the key of `address`:`port` in `known_hosts`: earlier keys filed under
    that name (plain or hashed) are dropped, every other line is kept as it was."""
    name = known_hosts_name(address, port)
    lines = known_hosts.read_text().splitlines() if known_hosts.exists() else []
    kept = [line for line in (_without(name, line) for line in lines) if line is not None]
    kept.append(f"{name} {key.get_name()} {key.get_base64()}")
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed: a run reading the file never sees half of it.
    fd, temporary = tempfile.mkstemp(dir=known_hosts.parent, prefix=f".{known_hosts.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write("".join(f"{line}\n" for line in kept))
        if known_hosts.exists():
            os.chmod(temporary, known_hosts.stat().st_mode & 0o777)
        else:
            os.chmod(temporary, 0o644)
        os.replace(temporary, known_hosts)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _without(name: str, line: str) -> str | None:
    """`line` with `name` taken out of its host names; None when no name is left."""
    fields = line.split(maxsplit=1)
    if len(fields) < 2 or line.lstrip().startswith(("#", "@")):
        return line
    names = fields[0].split(",")
    left = [host for host in names if not _matches(name, host)]
    if len(left) == len(names):
        return line
    return f"{','.join(left)} {fields[1]}" if left else None


def _matches(name: str, pattern: str) -> bool:
    if pattern.startswith("|1|"):
        return paramiko.HostKeys.hash_host(name, pattern) == pattern
    return pattern == name
