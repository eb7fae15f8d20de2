"""Lab values, host output and names reach a host's shell only quoted: each command
the harness builds is run here through bash with stand-ins for the programs it calls."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.guests.guest import write_config_command, xl_command
from harness.migration import probe_start_command, probe_stop_command
from harness.migration_hosts import (
    NOT_IN_NAMES,
    PEER_MARK,
    SSH_CLIENT_CONFIG,
    TRUST_KNOWN_HOSTS,
    pairing_script,
    ssh_check_command,
)
from harness.nbd import attach_command, export_command, export_config, stop_command
from harness.network import nat_command, route_command, sink_command
from harness.support import verify_archive, xen_section_script

from .shell import HOSTILE, calls

# Values without blanks: names and addresses that may go into line-based files too.
HOSTILE_WORDS = [value for value in HOSTILE if " " not in value]
PAIRABLE = [value for value in HOSTILE_WORDS if not set(value) & set(NOT_IN_NAMES)]


@pytest.mark.parametrize("value", HOSTILE)
def test_ssh_to_a_peer_quotes_its_name(tmp_path: Path, value: str) -> None:
    assert calls(ssh_check_command(value), tmp_path, "ssh") == [
        ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", value, "true"]]


def run_pairing(script: str, root: Path) -> dict[str, str]:
    """The pairing script with its files under `root`; their contents afterwards."""
    files = {"/etc/hosts": root / "hosts", SSH_CLIENT_CONFIG: root / "ssh_config",
             "/root/.ssh": root / "ssh"}
    for real, stand_in in files.items():
        script = script.replace(real, str(stand_in))
    (root / "hosts").write_text("127.0.0.1 localhost\n")
    assert calls(script, root) == []
    return {"hosts": (root / "hosts").read_text(),
            "known_hosts": Path(TRUST_KNOWN_HOSTS.replace("/root/.ssh", str(root / "ssh")))
            .read_text(),
            "authorized_keys": (root / "ssh" / "authorized_keys").read_text(),
            "config": (root / "ssh_config").read_text()}


@pytest.mark.parametrize("value", PAIRABLE)
def test_pairing_writes_hostile_names_and_addresses_verbatim(tmp_path: Path,
                                                             value: str) -> None:
    key = f"ssh-ed25519 AAAA{value} xenhil-x"
    script = pairing_script([(value, value), ("vlab2", "10.0.0.2")], [(value, key)],
                            [(f"{value},{value}", key)])
    files = run_pairing(script, tmp_path)
    assert files["hosts"] == (f"127.0.0.1 localhost\n{value} {value} # {PEER_MARK}\n"
                              f"10.0.0.2 vlab2 # {PEER_MARK}\n")
    assert files["known_hosts"] == f"{value},{value} ssh-ed25519 AAAA{value}\n"
    assert files["authorized_keys"] == f"ssh-ed25519 AAAA{value} {value} {PEER_MARK}\n"
    assert f"Host {value} vlab2\n" in files["config"]
    run_pairing(script, tmp_path)  # idempotent: lines replaced, not added twice
    assert files == run_pairing(script, tmp_path)


def test_a_key_cannot_add_lines(tmp_path: Path) -> None:
    key = "ssh-ed25519 AAAA\nssh-ed25519 EVIL attacker"
    files = run_pairing(pairing_script([("vlab1", "10.0.0.1")], [("vlab1", key)],
                                       [("vlab1", key)]), tmp_path)
    assert files["authorized_keys"] == f"ssh-ed25519 AAAA vlab1 {PEER_MARK}\n"
    assert files["known_hosts"] == "vlab1 ssh-ed25519 AAAA\n"


@pytest.mark.parametrize(("name", "address"), [
    ("vlab1 evil", "10.0.0.1"), ("vlab1\n10.6.6.6", "10.0.0.1"), ("vlab1", "10.0.0.1 x"),
    ("vlab1,evil", "10.0.0.1"), ("vlab1#", "10.0.0.1"), ("", "10.0.0.1"), ("vlab*", "1"),
])
def test_names_that_would_add_fields_or_lines_are_refused(name: str, address: str) -> None:
    with pytest.raises(ConfigError, match="not usable in /etc/hosts"):
        pairing_script([(name, address)], [], [])


@pytest.mark.parametrize("value", HOSTILE_WORDS)
def test_nbd_export_quotes_every_value(tmp_path: Path, value: str) -> None:
    image, config, pidfile = (str(tmp_path / f"{what}{value}") for what in ("img", "c", "p"))
    command = export_command(value, value, image, config, pidfile, 8)
    assert calls(command, tmp_path, "mkdir", "truncate", "nbd-server") == [
        ["mkdir", "-p", "/var/lib/xen/images/xenhil"], ["truncate", "-s", "8M", image],
        ["nbd-server", "-C", config, "-p", pidfile]]
    assert Path(config).read_text() == export_config(value, value, image)


def test_nbd_export_listens_on_the_link_address_only() -> None:
    config = export_config("disk1", "192.168.100.1", "/var/lib/xen/images/xenhil/a.img")
    assert "listenaddr = 192.168.100.1\nport = 10809\n[disk1]\n" in config


@pytest.mark.parametrize(("name", "address"), [
    ("d]\n[x", "10.0.0.1"), ("d", "10.0.0.1\nport = 1"), ("d", ""), ("d e", "10.0.0.1")])
def test_nbd_config_values_cannot_add_lines(name: str, address: str) -> None:
    with pytest.raises(ConfigError, match="NBD"):
        export_config(name, address, "/i.img")


@pytest.mark.parametrize("value", HOSTILE)
def test_nbd_attach_and_stop_quote_every_value(tmp_path: Path, value: str) -> None:
    assert calls(attach_command(value, f"/dev/{value}", value), tmp_path, "nbd-client") == [
        ["nbd-client", value, "10809", f"/dev/{value}", "-N", value]]
    assert calls(stop_command(value, value, value), tmp_path, "kill", "rm") == [
        ["rm", "-f", value, value, value]]


@pytest.mark.parametrize("value", HOSTILE)
def test_routes_and_nat_quote_lab_values(tmp_path: Path, value: str) -> None:
    assert calls(route_command("replace", value, value), tmp_path, "ip") == [
        ["ip", "route", "replace", value, "via", value]]
    assert calls(nat_command("-A", value, value), tmp_path, "iptables") == [
        ["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", value, "-o", value,
         "-j", "MASQUERADE"]]


@pytest.mark.parametrize("value", HOSTILE)
def test_tcp_sink_quotes_its_address(tmp_path: Path, value: str) -> None:
    output = str(tmp_path / "sink-5201.json")
    sink = calls(sink_command(value, 5201, 100, 5, output), tmp_path, "nohup")
    assert sink[0][:3] == ["nohup", "python3", "-c"]
    assert sink[0][4:] == ["5201", "100", "5", output, value]


@pytest.mark.parametrize("value", HOSTILE)
def test_xl_commands_quote_every_word(tmp_path: Path, value: str) -> None:
    assert calls(xl_command("network-attach", value, f"mac={value},bridge=xenbr0"), tmp_path,
                 "xl") == [["xl", "network-attach", value, f"mac={value},bridge=xenbr0"]]
    assert calls(xl_command("shutdown", "-w", value), tmp_path, "xl") == [
        ["xl", "shutdown", "-w", value]]


@pytest.mark.parametrize("value", HOSTILE)
def test_xl_config_is_written_verbatim_where_named(tmp_path: Path, value: str) -> None:
    path = tmp_path / f"xl{value}" / f"{value}.cfg"
    text = f"name = '{value}'\nextra = \"$(reboot) `reboot`\"\n"
    assert calls(write_config_command(str(path), text), tmp_path) == []
    assert path.read_text() == text


@pytest.mark.parametrize("value", HOSTILE)
def test_ping_probe_quotes_its_address_and_files(tmp_path: Path, value: str) -> None:
    log, pid_file = tmp_path / f"probe-{value}.log", tmp_path / f"probe-{value}.pid"
    assert calls(probe_start_command(value, str(log), str(pid_file)), tmp_path, "nohup") == [
        ["nohup", "ping", "-D", "-O", "-n", "-i", "0.1", "-W", "1", value]]
    pid = pid_file.read_text().strip()
    assert pid.isdigit()
    log.write_text("PING summary\n")
    stop = probe_stop_command(int(pid), str(log), str(pid_file))
    assert calls(stop, tmp_path, "kill", "sleep", "cat") == [
        ["kill", "-INT", pid], ["sleep", "0.5"], ["cat", str(log)]]
    assert not log.exists() and not pid_file.exists()


def free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def test_tcp_sink_listens_on_the_given_address_only(tmp_path: Path) -> None:
    address, size = "127.0.0.2", 4096
    port = free_port(address)
    output = tmp_path / "sink.json"
    subprocess.run(["bash", "-c", sink_command(address, port, size, 10, str(output))],
                   check=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            sender = socket.create_connection((address, port), timeout=1)
            break
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, "the sink never listened"
            time.sleep(0.05)
    with sender:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        sender.sendall(bytes(size))
    while not output.exists():
        assert time.monotonic() < deadline, "the sink wrote no result"
        time.sleep(0.05)
    assert '"bytes": 4096' in output.read_text()


@pytest.mark.parametrize("value", [v for v in HOSTILE_WORDS if "/" not in v])
def test_xen_section_archive_of_a_hostile_bundle_name(tmp_path: Path, value: str) -> None:
    if Path("/proc/xen/capabilities").exists():
        pytest.skip("this machine is a Xen domain: the script would not skip here")
    assert calls(xen_section_script(value, str(tmp_path)), tmp_path) == []
    archive = tmp_path / f"xen-{value}.tar.gz"
    assert verify_archive(archive, tmp_path / f"xen-{value}.tar.gz.sha256", "sha256") == 2
