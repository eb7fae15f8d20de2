"""Pairing dom0s for migration lasts one test: pair, then unpair, on two fake dom0s
whose files live in directories here, every command run by a real bash (and a real
ssh-keygen); afterwards /etc/hosts, authorized_keys and known_hosts are as they were,
and the leak check finds whatever is not."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from harness import evidence, migration_hosts
from harness.errors import InfrastructureError
from harness.health import HostHealth
from harness.host import Host
from harness.leaks import Leaked
from harness.migration_hosts import (
    PEER_MARK,
    SSH_CLIENT_CONFIG,
    TRUST_DIR,
    TRUST_KEY,
    TRUST_KNOWN_HOSTS,
    pair_hosts,
    paired,
    unpair_hosts,
)
from harness.remote import CommandFailed, CommandResult, SSHUnavailable
from harness.run_profile import step_phase

ADMIN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHarnessLoginKeyOfTheLabxxxxxxxxxxxxxxxxxxx lab"


class FakeDom0:
    """A dom0 whose /etc and /root are under `root`; `ssh` (the peers' check) is a
    stand-in that succeeds, every other program is this machine's."""

    def __init__(self, name: str, root: Path, link_address: str, host_key_file: Path) -> None:
        self.name = name
        self.root = root
        self.spec = SimpleNamespace(link_address=link_address, ssh=SimpleNamespace(
            address=f"{name}.lab.example", port=22, host_key_file=host_key_file,
            known_hosts_file=None))
        self.health = HostHealth(name)
        self.timeouts = {"command": 30.0}
        self.reachable = True
        self.ssh = "true"  # the shell function standing in for ssh
        (root / "etc/ssh/ssh_config.d").mkdir(parents=True)
        (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n{link_address} {name}-link\n")
        (root / "root/.ssh").mkdir(parents=True, mode=0o700)
        (root / "root/.ssh/authorized_keys").write_text(ADMIN_KEY + "\n")

    def path(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def run(self, command: str, *, timeout: float = 60.0, check: bool = True) -> CommandResult:
        if not self.reachable:
            raise SSHUnavailable(f"{self.name}: cannot reach sshd")
        for real in ("/etc/hosts", "/etc/ssh/ssh_config.d", "/root/.ssh"):
            command = command.replace(real, str(self.path(real)))
        process = subprocess.run(["bash", "-c", f"ssh() {{ {self.ssh}; }}\n" + command],
                                 capture_output=True, text=True, timeout=30, check=False)
        result = CommandResult(self.name, command, process.returncode, process.stdout,
                               process.stderr, datetime.now(UTC), 0.0)
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def files(self) -> dict[str, str]:
        """Every file under its root, with its content."""
        return {str(path.relative_to(self.root)): path.read_text()
                for path in sorted(self.root.rglob("*")) if path.is_file()}


@pytest.fixture
def dom0s(tmp_path: Path) -> list[FakeDom0]:
    hosts = []
    for index, name in enumerate(("vlab1", "vlab2"), 1):
        host_key = tmp_path / f"{name}_host_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
                       check=True)
        hosts.append(FakeDom0(name, tmp_path / name, f"198.51.100.1{index}",
                              host_key.with_suffix(".pub")))
    return hosts


def as_hosts(dom0s: list[FakeDom0]) -> list[Host]:
    return [cast(Host, dom0) for dom0 in dom0s]


def test_pairing_trusts_the_peers_new_key_and_knows_the_peer(dom0s: list[FakeDom0]) -> None:
    vlab1 = dom0s[0]
    checked: list[str] = []
    for dom0 in dom0s:  # the stand-in ssh notes where it was asked to go
        dom0.ssh = f"echo {dom0.name} \"$@\" >> {dom0.root / 'ssh-calls'}"
    pair_hosts(as_hosts(dom0s))
    for dom0 in dom0s:
        checked += (dom0.root / "ssh-calls").read_text().splitlines()
        (dom0.root / "ssh-calls").unlink()
    assert sorted(checked) == ["vlab1 -o BatchMode=yes -o ConnectTimeout=20 vlab2 true",
                               "vlab2 -o BatchMode=yes -o ConnectTimeout=20 vlab1 true"]
    keys = [" ".join(dom0.path(f"{TRUST_KEY}.pub").read_text().split()[:2]) for dom0 in dom0s]
    pinned = [" ".join(dom0.spec.ssh.host_key_file.read_text().split()[:2]) for dom0 in dom0s]
    for dom0, (peer, address, key, host_key) in zip(
            dom0s, [("vlab2", "198.51.100.12", keys[1], pinned[1]),
                    ("vlab1", "198.51.100.11", keys[0], pinned[0])], strict=True):
        assert dom0.path("/root/.ssh/authorized_keys").read_text() == (
            f"{ADMIN_KEY}\n{key} {peer} {PEER_MARK}\n")
        assert dom0.path("/etc/hosts").read_text().endswith(
            f"-link\n{address} {peer} # {PEER_MARK}\n")
        assert dom0.path(TRUST_KNOWN_HOSTS).read_text() == f"{peer},{address} {host_key}\n"
        assert f"IdentityFile {dom0.path(TRUST_KEY)}\n" in dom0.path(SSH_CLIENT_CONFIG).read_text()
    # checked by OpenSSH's own reader of known_hosts
    found = subprocess.run(["ssh-keygen", "-F", "vlab2", "-f", str(vlab1.path(TRUST_KNOWN_HOSTS))],
                           capture_output=True, text=True, check=False)
    assert found.returncode == 0 and pinned[1] in found.stdout
    # what OpenSSH's client makes of the config for a peer (-G: print it, connect nowhere)
    config = subprocess.run(["ssh", "-G", "-F", str(vlab1.path(SSH_CLIENT_CONFIG)), "vlab2"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert {f"identityfile {vlab1.path(TRUST_KEY)}", "identitiesonly yes",
            f"userknownhostsfile {vlab1.path(TRUST_KNOWN_HOSTS)}",
            "stricthostkeychecking true", "updatehostkeys false",
            "batchmode yes"} <= set(config)
    # and of any other name: none of the pairing's settings
    elsewhere = subprocess.run(["ssh", "-G", "-F", str(vlab1.path(SSH_CLIENT_CONFIG)),
                                "localhost"], capture_output=True, text=True,
                               check=True).stdout.splitlines()
    assert f"identityfile {vlab1.path(TRUST_KEY)}" not in elsewhere


def test_pair_then_unpair_leaves_every_file_as_it_was(dom0s: list[FakeDom0]) -> None:
    before = [dom0.files() for dom0 in dom0s]
    with paired(as_hosts(dom0s)):
        assert all(dom0.path(TRUST_KEY).exists() for dom0 in dom0s)
    assert [dom0.files() for dom0 in dom0s] == before
    assert not any(dom0.path(TRUST_DIR).exists() for dom0 in dom0s)


def test_an_authorized_keys_the_pairing_made_goes_with_it(dom0s: list[FakeDom0]) -> None:
    for dom0 in dom0s:
        dom0.path("/root/.ssh/authorized_keys").unlink()
    before = [dom0.files() for dom0 in dom0s]
    with paired(as_hosts(dom0s)):
        assert PEER_MARK in dom0s[0].path("/root/.ssh/authorized_keys").read_text()
    assert [dom0.files() for dom0 in dom0s] == before


def test_a_second_pairing_replaces_the_first(dom0s: list[FakeDom0]) -> None:
    pair_hosts(as_hosts(dom0s))
    first = dom0s[1].path(f"{TRUST_KEY}.pub").read_text()
    pair_hosts(as_hosts(dom0s))
    authorized = dom0s[0].path("/root/.ssh/authorized_keys").read_text()
    assert first.split()[1] not in authorized  # the old key no longer logs in
    assert authorized.count(PEER_MARK) == 1


def test_traces_left_by_an_earlier_harness_are_removed(dom0s: list[FakeDom0]) -> None:
    before = [dom0.files() for dom0 in dom0s]
    legacy = dom0s[0].path("/root/.ssh/known_hosts")  # where earlier versions wrote
    legacy.write_text(f"vlab2,198.51.100.12 ssh-ed25519 AAAA {PEER_MARK}\n")
    unpair_hosts(as_hosts(dom0s))
    assert legacy.read_text() == ""
    legacy.unlink()
    assert [dom0.files() for dom0 in dom0s] == before


def test_the_leak_check_names_a_trace_left_behind(
        dom0s: list[FakeDom0], monkeypatch: pytest.MonkeyPatch) -> None:
    complete = migration_hosts.unpairing_script()
    forgetful = complete.replace(f"sed -i '/ {PEER_MARK}$/d' /etc/hosts || failed=1", "true")
    assert forgetful != complete
    monkeypatch.setattr(migration_hosts, "unpairing_script", lambda: forgetful)
    with pytest.raises(Leaked) as leaked, paired(as_hosts(dom0s)):
        pass
    message = str(leaked.value)
    assert message.startswith("left behind after their pairing for migration was removed: "
                              "vlab1: migration trust: "), message
    assert f"{dom0s[1].path('/etc/hosts')}:198.51.100.11 vlab1 # {PEER_MARK}" in message
    assert f"{dom0s[0].path('/etc/hosts')}:198.51.100.12 vlab2 # {PEER_MARK}" in message
    assert "authorized_keys:" not in message  # what was removed is not named


def test_a_dom0_that_does_not_answer_is_left_for_its_next_pairing(
        dom0s: list[FakeDom0]) -> None:
    vlab1, vlab2 = dom0s
    before = vlab2.files()
    start = time.monotonic()
    with paired(as_hosts(dom0s)):
        vlab1.reachable = False  # powered off by the test, say
    assert time.monotonic() - start < 30
    assert vlab2.files() == before  # the other one is clean
    vlab1.reachable = True
    assert vlab1.path(TRUST_KEY).exists()
    with paired(as_hosts(dom0s)):
        pass
    assert not vlab1.path(TRUST_DIR).exists()


def test_the_pairings_leak_check_is_a_step_before_and_after(dom0s: list[FakeDom0]) -> None:
    """Named steps, so that a run's profile counts their time (harness/run_profile.py)."""
    steps: list[str] = []

    class Recorder(evidence.LogSink):
        def step(self, title: str) -> Any:
            steps.append(title)
            return super().step(title)

    evidence.install(Recorder())
    try:
        with paired(as_hosts(dom0s)):
            pass
    finally:
        evidence.install(None)
    assert steps == ["leak check: note the state of vlab1, vlab2",
                     "leak check: their pairing for migration was removed"]
    assert all(step_phase(title) == "leak check" for title in steps)


def test_the_hosts_check_their_ssh_to_the_peers_side_by_side(dom0s: list[FakeDom0],
                                                             tmp_path: Path) -> None:
    log = tmp_path / "ssh.log"
    for dom0 in dom0s:
        # each check notes when it began and ended
        dom0.ssh = (f'echo "{dom0.name} $(date +%s.%N) start" >> {log}; sleep 0.3; '
                    f'echo "{dom0.name} $(date +%s.%N) end" >> {log}')
    pair_hosts(as_hosts(dom0s))
    spans = {}
    for line in log.read_text().splitlines():
        name, at, what = line.split()
        first, last = spans.get(name, (float("inf"), 0.0))
        spans[name] = (min(first, float(at)), last) if what == "start" else (first, float(at))
    assert len(log.read_text().splitlines()) == 2 * 2  # each host to its peer
    (start1, end1), (start2, end2) = spans["vlab1"], spans["vlab2"]
    assert start2 < end1 and start1 < end2  # at the same time


def test_a_failed_ssh_check_names_the_host_and_peer(dom0s: list[FakeDom0]) -> None:
    dom0s[1].ssh = 'if [ "$5" = vlab1 ]; then echo "Permission denied (publickey)" >&2; ' \
                   'return 255; fi'
    with pytest.raises(InfrastructureError,
                       match=r"vlab2: root cannot SSH to vlab1 after pairing .*"
                             r"Permission denied \(publickey\)"):
        pair_hosts(as_hosts(dom0s))
