"""Every SSH and SFTP operation ends by its deadline, and a host fault ends it at once.

Against a real SSH server on loopback (tests/unit/sshserver.py) behind a proxy that
freezes the connection the way a stopped machine does: no error, only silence.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import remote as remote_module
from harness.console_watch import ConsoleCrash, ConsoleEvent, Severity
from harness.health import HostHealth
from harness.lab import SSHEndpoint
from harness.liveness import ssh_banner
from harness.remote import CommandFailed, RemoteHost, SSHTimeout, SSHUnavailable

from .sshserver import FreezingProxy, SSHServer

# Xen 4.17 xen/common/shutdown.c: what com1 shows when dom0 crashes.
DOM0_CRASHED = ConsoleEvent("dom0_crashed", "(XEN) Hardware Dom0 crashed: rebooting machine "
                            "in 5 seconds.", Severity.FATAL)


@pytest.fixture
def proxy(ssh_server: SSHServer) -> Iterator[FreezingProxy]:
    proxy = FreezingProxy(ssh_server.port)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def health() -> HostHealth:
    return HostHealth("host1")


@pytest.fixture
def remote(ssh_server: SSHServer, proxy: FreezingProxy, health: HostHealth) -> Iterator[RemoteHost]:
    endpoint = SSHEndpoint("127.0.0.1", proxy.port, "root", ssh_server.client_key_file,
                           ssh_server.host_public_key_file)
    remote = RemoteHost("host1", endpoint, health=health)
    health.on_fault(remote.close)
    try:
        yield remote
    finally:
        remote.close()


def crash_after(seconds: float, health: HostHealth) -> threading.Timer:
    crash = ConsoleCrash(DOM0_CRASHED, DOM0_CRASHED.line, "host1")
    timer = threading.Timer(seconds, health.fault, args=(crash,))
    timer.start()
    return timer


def took(start: float) -> float:
    return time.monotonic() - start


def test_commands_and_files_work(remote: RemoteHost, tmp_path: Path) -> None:
    result = remote.run("echo out; echo err >&2; exit 3", check=False)
    assert (result.exit_status, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert remote.run("cat", stdin=b"through stdin").stdout == "through stdin"
    local = tmp_path / "local.txt"
    local.write_text("0123456789")
    remote.put(local, str(tmp_path / "remote.txt"), timeout=10)
    assert remote.stat_size(str(tmp_path / "remote.txt")) == 10
    assert remote.stat_size(str(tmp_path / "missing")) is None
    assert remote.read(str(tmp_path / "remote.txt"), offset=2, size=3) == b"234"
    assert remote.read(str(tmp_path / "remote.txt"), limit=4) == b"6789"  # the end
    assert remote.read(str(tmp_path / "missing")) == b""
    remote.get(str(tmp_path / "remote.txt"), tmp_path / "back.txt", timeout=10)
    assert (tmp_path / "back.txt").read_text() == "0123456789"


def test_command_output_is_capped_and_marked(remote: RemoteHost,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote_module, "OUTPUT_LIMIT", 1000)
    result = remote.run("head -c 50000 /dev/zero | tr '\\0' x")
    assert result.stdout.startswith("x" * 1000)
    assert "output truncated by xen-hil" in result.stdout
    assert len(result.stdout) < 1200


def test_silent_sshd_is_given_up_on_at_the_connect_deadline(
        remote: RemoteHost, proxy: FreezingProxy) -> None:
    proxy.freeze()  # TCP connects, the banner never comes
    start = time.monotonic()
    with pytest.raises(SSHUnavailable):
        remote.client(timeout=2)
    assert took(start) < 6


def test_command_on_a_frozen_host_ends_at_its_deadline(remote: RemoteHost,
                                                        proxy: FreezingProxy) -> None:
    remote.run("true")  # connected before the host freezes
    proxy.freeze()
    start = time.monotonic()
    with pytest.raises(SSHTimeout, match="no answer within 3 s"):
        remote.run("echo never", timeout=3)
    assert took(start) < 6


def test_host_freezing_mid_command_times_the_command_out(remote: RemoteHost,
                                                         proxy: FreezingProxy) -> None:
    threading.Timer(0.5, proxy.freeze).start()
    start = time.monotonic()
    with pytest.raises(CommandFailed, match="timed out"):
        remote.run("sleep 0.2; echo started; sleep 30", timeout=3)
    assert took(start) < 5


@pytest.mark.parametrize("operation", ["read", "stat", "put", "get"])
def test_sftp_on_a_frozen_host_ends_at_its_deadline(remote: RemoteHost, proxy: FreezingProxy,
                                                    tmp_path: Path, operation: str) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"data")
    remote.run("true")
    proxy.freeze()
    start = time.monotonic()
    with pytest.raises(SSHTimeout):
        if operation == "read":
            remote.read(str(path), timeout=3)
        elif operation == "stat":
            remote.stat_size(str(path), timeout=3)
        elif operation == "put":
            remote.put(path, str(tmp_path / "copy"), timeout=3)
        else:
            remote.get(str(path), tmp_path / "copy", timeout=3)
    assert took(start) < 6


def test_crash_ends_a_running_command_at_once(remote: RemoteHost, health: HostHealth) -> None:
    remote.run("true")
    crash_after(1.0, health)
    start = time.monotonic()
    with pytest.raises(ConsoleCrash, match="Hardware Dom0 crashed"):
        remote.run("sleep 60", timeout=120)
    assert took(start) < 3


def test_crash_ends_a_blocked_sftp_read_at_once(remote: RemoteHost, health: HostHealth,
                                                proxy: FreezingProxy, tmp_path: Path) -> None:
    remote.run("true")
    proxy.freeze()  # the read blocks waiting for the server's answer ...
    crash_after(1.0, health)  # ... until the crash closes the connection
    start = time.monotonic()
    with pytest.raises(ConsoleCrash):
        remote.read(str(tmp_path), timeout=120)
    assert took(start) < 3


def test_crash_ends_a_wait_for_ssh_at_once(remote: RemoteHost, health: HostHealth,
                                          proxy: FreezingProxy) -> None:
    proxy.freeze()
    crash_after(1.0, health)
    start = time.monotonic()
    with pytest.raises(ConsoleCrash):
        remote.wait_ready(timeout=120, interval=1)
    assert took(start) < 3


def test_every_operation_on_a_faulted_host_raises_the_fault(remote: RemoteHost,
                                                            health: HostHealth) -> None:
    crash_after(0, health).join()
    for operation in (lambda: remote.run("true"), lambda: remote.read("/etc/hostname"),
                      lambda: health.sleep(30)):
        start = time.monotonic()
        with pytest.raises(ConsoleCrash):
            operation()
        assert took(start) < 5  # not the 30 s sleep nor the 60 s default timeout


def test_a_sleep_ends_when_the_host_faults(health: HostHealth) -> None:
    crash_after(0.5, health)
    start = time.monotonic()
    with pytest.raises(ConsoleCrash):
        health.sleep(30)
    assert took(start) < 2


def test_power_cycle_clears_a_fault_but_not_a_broken_bmc(health: HostHealth) -> None:
    from harness.health import HostBroken

    crash_after(0, health).join()
    health.clear()
    health.check()  # nothing raised: the next boot starts clean
    health.fault(HostBroken("host1: BMC stopped answering"))
    health.clear()
    with pytest.raises(HostBroken):
        health.check()
    assert health.broken is not None


def test_banner_probe(ssh_server: SSHServer, proxy: FreezingProxy) -> None:
    assert ssh_banner("127.0.0.1", proxy.port, timeout=5)
    proxy.freeze()
    start = time.monotonic()
    assert not ssh_banner("127.0.0.1", proxy.port, timeout=2)
    assert took(start) < 4


def test_labgrid_command_and_file_transfer_through_the_hosts_connection(
        ssh_server: SSHServer, remote: RemoteHost, health: HostHealth, tmp_path: Path) -> None:
    from labgrid import Target
    from labgrid.driver.exception import ExecutionError
    from labgrid.resource import NetworkService

    from harness.drivers.xenssh import XenSSHDriver

    target = Target("host1")
    NetworkService(target, "ssh", address="127.0.0.1", username="root")
    XenSSHDriver(target, "shell").use(remote)
    shell = target.get_driver("CommandProtocol")
    transfer = target.get_driver("FileTransferProtocol")
    assert shell is transfer
    assert shell.run("echo out; echo err >&2; exit 4") == (["out"], ["err"], 4)
    assert shell.run_check("echo fine") == ["fine"]
    with pytest.raises(ExecutionError):
        shell.run_check("false")
    (tmp_path / "a.txt").write_text("payload")
    transfer.put(str(tmp_path / "a.txt"), str(tmp_path / "b.txt"))
    transfer.get(str(tmp_path / "b.txt"), str(tmp_path / "back"))
    assert (tmp_path / "back").read_text() == "payload"
    crash_after(0, health).join()  # the host's faults reach labgrid's users too
    with pytest.raises(ConsoleCrash):
        shell.run("true")
    target.cleanup()


def test_reads_from_two_threads_share_the_sftp_session(remote: RemoteHost,
                                                       tmp_path: Path) -> None:
    """Two guests booting side by side on one host poll their consoles at once:
    paramiko's SFTP client hands a reply to whichever thread reads it first, and drops
    a reply it did not ask for, so without one job at a time a read waits in vain."""
    files = {name: tmp_path / name for name in ("first.log", "second.log")}
    for name, path in files.items():
        path.write_bytes(name.encode() * 2000)
    failures: list[str] = []

    def poll(name: str) -> None:
        try:
            for _ in range(100):
                if remote.read(str(files[name]), timeout=10) != name.encode() * 2000:
                    failures.append(f"{name}: another file's bytes")
        except Exception as error:
            failures.append(f"{name}: {error}")

    begun = time.monotonic()
    threads = [threading.Thread(target=poll, args=(name,)) for name in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert took(begun) < 30


def test_a_read_waiting_for_the_sftp_session_leaves_the_job_holding_it_alone(
        remote: RemoteHost, tmp_path: Path) -> None:
    """The waiting read gives up at its deadline; the connection, which the job holding
    the session needs, stays open."""
    path = tmp_path / "console.log"
    path.write_bytes(b"ready")
    holding = threading.Event()
    held: list[object] = []

    def long_job() -> None:
        try:
            with remote.sftp(20, "a long job") as sftp:
                holding.set()
                time.sleep(3)
                held.append(sftp.stat(str(path)).st_size)
        except Exception as error:
            held.append(error)

    job = threading.Thread(target=long_job)
    job.start()
    assert holding.wait(10)
    with pytest.raises(SSHTimeout, match=r"host1: the SFTP session stayed busy for 1 s; "
                                         r"not reading .*console\.log"):
        remote.read(str(path), timeout=1)
    job.join(30)
    assert held == [5]
