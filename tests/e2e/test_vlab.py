"""The virtual lab behaves like a real one: IPMI power, com1 from the first byte, SSH,
a host-to-host network; and `down` leaves nothing behind. Hosts boot the base image
(plain Debian, no Xen): installing Xen is the harness's job, tested elsewhere."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from harness.com1 import Com1Recorder
from harness.ipmi import IPMITool
from harness.lab import Lab, default_lab, load_lab
from harness.remote import RemoteHost
from harness.vlab import control
from harness.vlab.image import Image

from .conftest import assert_vlab_down, qemu_com1_log

# Plain Debian under TCG, two hosts on two cores: generous, the figures are printed.
BOOT_TIMEOUT = 600


def read_pid(lab: Lab, host: str) -> int | None:
    vhost = next(h for h in control.virtual_hosts(lab) if h.name == host)
    return control.host_status(vhost).qemu_pid


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1)) / 1024


def sockets_of(pids: set[int]) -> list[tuple[str, str]]:
    """(protocol, local address) of every socket the processes have open."""
    out = subprocess.run(["ss", "-H", "-tuanp"], capture_output=True, text=True,
                         check=True).stdout
    found = []
    for line in out.splitlines():
        owners = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            fields = line.split()
            found.append((fields[0], fields[4]))
    return found


def assert_sockets_on_loopback(pids: set[int]) -> None:
    """Everything the lab's processes listen on or send from is on loopback."""
    sockets = sockets_of(pids)
    assert sockets, "found no sockets of QEMU and ipmi_sim"
    assert [s for s in sockets if not s[1].startswith("127.")] == []


def test_ipmitool_gets_no_password_on_its_command_line(vlab: Lab) -> None:
    spec = vlab.host("vlab1")
    argv, _env = IPMITool(spec.bmc).command(["chassis", "power", "status"])
    password = spec.bmc.password_file.read_text().strip()  # type: ignore[union-attr]
    assert password not in " ".join(argv)
    assert argv[argv.index("-f") + 1] == str(spec.bmc.password_file)
    assert IPMITool(spec.bmc).power_status() is False  # hosts stay off after `up`


@pytest.mark.long
def test_both_hosts_power_on_boot_to_ssh_and_power_off(
        vlab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """make bench: make test's areas run powers both hosts on through their BMCs, boots
    them to SSH and compares both com1 logs with QEMU's, and the test below checks that
    the lab's sockets are on loopback."""
    hosts = [vlab.host("vlab1"), vlab.host("vlab2")]
    recorders = {spec.name: Com1Recorder(spec.console, tmp_path / f"{spec.name}.log",
                                         name=spec.name).start()
                 for spec in hosts}
    streams = {name: recorder.subscribe() for name, recorder in recorders.items()}
    figures = []
    try:
        started = time.monotonic()
        for spec in hosts:
            IPMITool(spec.bmc).power_on()
        for spec in hosts:
            assert IPMITool(spec.bmc).power_status() is True
            streams[spec.name].expect([r"login: "], timeout=BOOT_TIMEOUT)
            remote = RemoteHost(spec.name, spec.ssh)
            remote.wait_ready(timeout=BOOT_TIMEOUT)
            ssh_ready = time.monotonic() - started
            assert remote.run("hostname").stdout.strip() == spec.name
            link = remote.run("ip -br -4 addr show xenbr0").stdout
            assert spec.link_address is not None and f"{spec.link_address}/24" in link
            pid = read_pid(vlab, spec.name)
            assert pid is not None
            figures.append(f"{spec.name}: power-on to SSH {ssh_ready:.0f} s, "
                           f"QEMU RSS {rss_mib(pid):.0f} MiB")
            remote.close()

        # The two hosts reach each other on the host-to-host network.
        vlab1 = RemoteHost("vlab1", hosts[0].ssh)
        ping = vlab1.run(f"ping -c 3 -W 2 {hosts[1].link_address}")
        assert " 0% packet loss" in ping.stdout
        vlab1.close()

        assert_sockets_on_loopback({pid for spec in hosts for pid in (
            read_pid(vlab, spec.name),
            control.host_status(next(h for h in control.virtual_hosts(vlab)
                                     if h.name == spec.name)).bmc_pid) if pid})

        for spec in hosts:
            pid = read_pid(vlab, spec.name)
            IPMITool(spec.bmc).power_off()
            IPMITool(spec.bmc).wait_power(False, timeout=30)
            assert pid is not None and not Path(f"/proc/{pid}").exists()
    finally:
        for recorder in recorders.values():
            recorder.stop()
    for spec in hosts:
        raw = recorders[spec.name].raw_path.read_bytes()
        # From the first byte: the firmware's banner, then Linux, then the login prompt.
        assert raw[:200].find(b"SeaBIOS") >= 0, raw[:200]
        assert b"Linux version" in raw and b"login: " in raw
        assert raw == qemu_com1_log(vlab, spec.name).read_bytes()
    with capsys.disabled():
        print("\n" + "\n".join(figures))


def test_power_cycle_restarts_the_machine(vlab: Lab, tmp_path: Path) -> None:
    spec = vlab.host("vlab1")
    ipmi = IPMITool(spec.bmc)
    with Com1Recorder(spec.console, tmp_path / "vlab1.log") as recorder:
        stream = recorder.subscribe()
        ipmi.power_on()
        stream.expect([r"GRUB|Booting `"], timeout=BOOT_TIMEOUT)
        first = read_pid(vlab, "vlab1")
        ipmi.power_cycle()
        ipmi.wait_power(True, timeout=30)
        stream.expect([r"SeaBIOS"], timeout=BOOT_TIMEOUT)
        second = read_pid(vlab, "vlab1")
        assert first is not None and second is not None and first != second
        stream.expect([r"Linux version"], timeout=BOOT_TIMEOUT)
    ipmi.power_off()


def test_down_leaves_no_process_and_no_port(vlab_image: Image) -> None:
    lab = load_lab(default_lab(), check_files=False)
    assert_vlab_down(lab)
    try:
        control.up(lab, vlab_image.disk)
        hosts = control.virtual_hosts(lab)
        IPMITool(lab.host("vlab2").bmc).power_on()  # a running machine, console never read
        statuses = [control.host_status(host) for host in hosts]
        expected = [("ipmi_sim", s.bmc_pid) for s in statuses] + [
            ("qemu-system", s.qemu_pid) for s in statuses if s.qemu_pid]
        assert len(expected) == 3
        assert_sockets_on_loopback({pid for _, pid in expected if pid})
    finally:
        control.down(lab)
    assert [pid for name, pid in expected if pid and control.process_alive(pid, name)] == []
    assert sockets_of({pid for _, pid in expected if pid}) == []
    for host in hosts:
        for address, port, protocol in host.listening_ports():
            assert not control.port_in_use(address, port, protocol), (address, port)
