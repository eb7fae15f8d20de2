"""SSH host keys against a real SSH server on loopback: only keys the lab trusts connect,
`xenhil lab trust` records the key a host presents, in OpenSSH's known_hosts format."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest
import yaml

from harness import cli
from harness.errors import InfrastructureError
from harness.host_keys import HostKeyRefused, known_hosts_name, record_key
from harness.lab import DEFAULT_LAB, SSHEndpoint, load_lab
from harness.remote import RemoteHost

from .sshserver import SSHServer


def openssh_fingerprint(public_key_file: Path) -> str:
    """The SHA256 fingerprint as OpenSSH's ssh-keygen prints it."""
    return subprocess.run(["ssh-keygen", "-lf", str(public_key_file)], check=True,
                          capture_output=True, text=True).stdout.split()[1]


def other_key(directory: Path) -> Path:
    """The public key file of a fresh ed25519 key: not the server's."""
    key = directory / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key.with_suffix(".pub")


def known_hosts_line(name: str, public_key_file: Path) -> str:
    keytype, data = public_key_file.read_text().split()[:2]
    return f"{name} {keytype} {data}\n"


Connect = Callable[[str, SSHEndpoint], RemoteHost]


@pytest.fixture
def connect() -> Iterator[Connect]:
    """`connect(name, endpoint)`: a RemoteHost, closed after the test."""
    made: list[RemoteHost] = []

    def remote(name: str, endpoint: SSHEndpoint) -> RemoteHost:
        made.append(RemoteHost(name, endpoint))
        return made[-1]

    yield remote
    for remote_host in made:
        remote_host.close()


def endpoint(ssh_server: SSHServer, known_hosts: Path | None,
             host_key_file: Path | None = None) -> SSHEndpoint:
    return SSHEndpoint("127.0.0.1", ssh_server.port, "root", ssh_server.client_key_file,
                       host_key_file, known_hosts)


def test_a_key_in_known_hosts_connects(ssh_server: SSHServer, connect: Connect,
                                       tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(
        known_hosts_line("[127.0.0.1]:9", other_key(tmp_path))  # another host's, kept apart
        + known_hosts_line(f"[127.0.0.1]:{ssh_server.port}", ssh_server.host_public_key_file))
    remote = connect("host1", endpoint(ssh_server, known_hosts))
    assert remote.run("echo connected").stdout == "connected\n"


def test_a_different_key_is_refused_at_once_saying_how_to_trust(
        ssh_server: SSHServer, connect: Connect, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(known_hosts_line(f"[127.0.0.1]:{ssh_server.port}",
                                            other_key(tmp_path)))
    remote = connect("host1", endpoint(ssh_server, known_hosts))
    start = time.monotonic()
    with pytest.raises(HostKeyRefused) as refused:
        remote.wait_ready(timeout=60, interval=1)  # not retried: a key does not change
    assert time.monotonic() - start < 10
    message = str(refused.value)
    assert message.startswith(f"host1: SSH host key of 127.0.0.1:{ssh_server.port} is not "
                              "the one the lab trusts: it presented ssh-ed25519 "
                              f"{openssh_fingerprint(ssh_server.host_public_key_file)}, the "
                              "lab trusts ssh-ed25519 "
                              f"{openssh_fingerprint(tmp_path / 'other_key.pub')}"), message
    assert f"`xenhil lab trust host1` (it records the key in {known_hosts})" in message
    assert isinstance(refused.value, InfrastructureError)  # BROKEN, not FAILED


def test_a_different_pinned_key_is_refused(ssh_server: SSHServer, connect: Connect,
                                           tmp_path: Path) -> None:
    pinned = other_key(tmp_path)
    remote = connect("vlab1", endpoint(ssh_server, None, host_key_file=pinned))
    with pytest.raises(HostKeyRefused, match=f"put its new public key in {pinned}"):
        remote.run("true")


@pytest.mark.parametrize("known_hosts_text", [
    None,  # no file yet
    "",
    "127.0.0.1 {key}",  # filed for port 22: the server listens elsewhere
    "@cert-authority [127.0.0.1]:{port} {key}",  # markers trust nothing here
], ids=["no file", "empty", "port 22 form", "marker"])
def test_an_unknown_host_is_refused(ssh_server: SSHServer, connect: Connect,
                                    tmp_path: Path, known_hosts_text: str | None) -> None:
    known_hosts = tmp_path / "known_hosts"
    key = " ".join(ssh_server.host_public_key_file.read_text().split()[:2])
    if known_hosts_text is not None:
        known_hosts.write_text(known_hosts_text.format(key=key, port=ssh_server.port) + "\n")
    remote = connect("host1", endpoint(ssh_server, known_hosts))
    with pytest.raises(HostKeyRefused) as refused:
        remote.run("true")
    assert str(refused.value) == (
        f"host1: SSH host key of 127.0.0.1:{ssh_server.port} is unknown: it presented "
        f"ssh-ed25519 {openssh_fingerprint(ssh_server.host_public_key_file)}, and "
        f"{known_hosts} has no key for [127.0.0.1]:{ssh_server.port}; if it is host1, trust "
        f"it with `xenhil lab trust host1` (it records the key in {known_hosts})")


def test_no_known_hosts_and_no_pinned_key_trusts_nothing(
        ssh_server: SSHServer, connect: Connect) -> None:
    remote = connect("host1", endpoint(ssh_server, None))
    with pytest.raises(HostKeyRefused, match="the lab file trusts no key for it; name a "
                                             "known_hosts file for host1"):
        remote.run("true")


def lab_at(tmp_path: Path, ssh_server: SSHServer, port: int | None = None) -> Path:
    """The virtual lab's file with vlab1 at the test server (or at `port`), trusted
    through known_hosts (no pinned key)."""
    data = yaml.safe_load(DEFAULT_LAB.read_text())
    data["targets"]["vlab1"]["resources"]["NetworkService"].update(
        address="127.0.0.1", port=port or ssh_server.port)
    defaults = data["xenhil"]["defaults"]
    del defaults["ssh_host_key_file"]
    defaults["ssh_known_hosts"] = "keys/known_hosts"  # relative to the lab file
    data["xenhil"]["hosts"]["vlab1"]["ssh_key_file"] = str(ssh_server.client_key_file)
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_lab_trust_yes_records_the_key_and_then_it_connects(
        ssh_server: SSHServer, connect: Connect, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    lab = load_lab(lab_at(tmp_path, ssh_server), check_files=False)
    spec = lab.host("vlab1")
    known_hosts = tmp_path / "keys" / "known_hosts"
    assert spec.ssh.known_hosts_file == known_hosts
    with pytest.raises(HostKeyRefused):
        connect("vlab1", spec.ssh).run("true")

    assert cli.main(["--lab", str(lab.path), "lab", "trust", "vlab1", "--yes"]) == 0
    shown = capsys.readouterr().err
    fingerprint = openssh_fingerprint(ssh_server.host_public_key_file)
    assert f"vlab1 (127.0.0.1:{ssh_server.port}) presents ssh-ed25519 {fingerprint}" in shown
    assert known_hosts.read_text() == known_hosts_line(f"[127.0.0.1]:{ssh_server.port}",
                                                       ssh_server.host_public_key_file)
    # OpenSSH finds it under the name it would look up
    found = subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{ssh_server.port}", "-f",
                            str(known_hosts)], capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    assert connect("vlab1", spec.ssh).run("echo trusted").stdout == "trusted\n"

    assert cli.main(["--lab", str(lab.path), "lab", "trust", "vlab1", "--yes"]) == 0
    assert "already trusted" in capsys.readouterr().err
    assert len(known_hosts.read_text().splitlines()) == 1


def test_lab_trust_records_nothing_unless_confirmed(
        ssh_server: SSHServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = lab_at(tmp_path, ssh_server)
    monkeypatch.setattr("builtins.input", lambda prompt="": "n")
    assert cli.main(["--lab", str(path), "lab", "trust", "vlab1"]) == 1
    assert not (tmp_path / "keys" / "known_hosts").exists()
    monkeypatch.setattr("builtins.input", lambda prompt="": "y")
    assert cli.main(["--lab", str(path), "lab", "trust", "vlab1"]) == 0
    assert (tmp_path / "keys" / "known_hosts").read_text().startswith(
        f"[127.0.0.1]:{ssh_server.port} ssh-ed25519 ")


def test_lab_trust_of_a_host_that_never_answers_ends_within_its_timeout(
        ssh_server: SSHServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel does), never speaks
    port = silent.getsockname()[1]
    try:
        path = lab_at(tmp_path, ssh_server, port)
        start = time.monotonic()
        code = cli.main(["--lab", str(path), "lab", "trust", "vlab1", "--yes",
                         "--timeout", "2"])
        elapsed = time.monotonic() - start
    finally:
        silent.close()
    assert code == 2
    assert elapsed < 8
    assert f"no SSH host key from 127.0.0.1:{port} within 2 s" in \
        capsys.readouterr().err
    assert not (tmp_path / "keys" / "known_hosts").exists()


def test_lab_trust_needs_a_known_hosts_file(capsys: pytest.CaptureFixture[str]) -> None:
    # the virtual lab pins its keys: there is no file to record one in
    assert cli.main(["--lab", str(DEFAULT_LAB), "lab", "trust", "vlab1", "--yes"]) == 2
    assert "host vlab1 has no ssh_known_hosts" in capsys.readouterr().err


def test_known_hosts_names_as_openssh_writes_them() -> None:
    assert known_hosts_name("xen-01.lab.example", 22) == "xen-01.lab.example"
    assert known_hosts_name("127.0.1.1", 6222) == "[127.0.1.1]:6222"
    assert known_hosts_name("2001:db8::1", 2222) == "[2001:db8::1]:2222"


def test_recording_replaces_the_hosts_old_key_and_keeps_every_other_line(
        tmp_path: Path) -> None:
    keys = []
    for name in ("old", "new"):
        (tmp_path / name).mkdir()
        keys.append(paramiko.PKey.from_path(other_key(tmp_path / name).with_suffix("")))
    old, new = keys
    hashed = paramiko.HostKeys.hash_host("xen-01.lab.example")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(
        "# a comment\n"
        f"xen-01.lab.example,192.0.2.1 ssh-ed25519 {old.get_base64()}\n"
        f"{hashed} ssh-ed25519 {old.get_base64()}\n"
        f"[xen-01.lab.example]:2222 ssh-ed25519 {old.get_base64()}\n"
        f"@revoked xen-01.lab.example ssh-ed25519 {old.get_base64()}\n")
    record_key(known_hosts, "xen-01.lab.example", 22, new)
    assert known_hosts.read_text() == (
        "# a comment\n"
        f"192.0.2.1 ssh-ed25519 {old.get_base64()}\n"
        f"[xen-01.lab.example]:2222 ssh-ed25519 {old.get_base64()}\n"
        f"@revoked xen-01.lab.example ssh-ed25519 {old.get_base64()}\n"
        f"xen-01.lab.example ssh-ed25519 {new.get_base64()}\n")
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []
