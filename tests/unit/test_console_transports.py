"""Console transports against real servers on loopback: the recorder's files hold the
console's bytes exactly, whatever carries them.

- RFC 2217: a real ser2net (telnet(rfc2217) accepter) serving one end of a pty whose
  other end the test writes.
- A local serial device: a pty, through pyserial.
- IPMI Serial-over-LAN: a real ipmi_sim whose SOL serial port is a TCP server of the
  test, and the real ipmitool.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from labgrid import Environment

from harness.com1 import Com1Recorder
from harness.console_transport import RFC2217Port, SerialDevicePort, SOLPort
from harness.drivers.com1console import Com1ConsoleDriver
from harness.install import boot_settings, xen_cmdline
from harness.ipmi import BMC, IPMITool
from harness.lab import DEFAULT_LAB, load_lab
from tests.console_server import Ser2net
from tests.unit.test_com1 import ConsoleServer, free_port, wait_for

EVERY_BYTE = bytes(range(256)) * 4  # 0xFF is telnet's IAC; 0x00, CR and LF pass as well


def markers(recorder: Com1Recorder) -> list[str]:
    return [line.split(" # ", 1)[1] for line in
            recorder.log_path.read_text(errors="replace").splitlines() if " # " in line]


def wait_marker(recorder: Com1Recorder, prefix: str, count: int = 1) -> None:
    wait_for(lambda: sum(m.startswith(prefix) for m in markers(recorder)) >= count,
             f"{count} marker(s) {prefix!r} in {recorder.log_path}")


def wait_raw(recorder: Com1Recorder, expected: bytes) -> None:
    wait_for(lambda: recorder.raw_path.read_bytes() == expected
             or len(recorder.raw_path.read_bytes()) > len(expected),
             f"{len(expected)} bytes in {recorder.raw_path}")
    assert recorder.raw_path.read_bytes() == expected


class Pty:
    """A pseudo-terminal: the test writes and reads `master`; `device` is the serial port."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.device = os.ttyname(self._slave)
        self._open = True

    def write(self, data: bytes) -> None:
        while data:
            data = data[os.write(self.master, data):]

    def read_exactly(self, size: int, timeout: float = 10.0) -> bytes:
        data = b""
        deadline = time.monotonic() + timeout
        while len(data) < size and time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.1)[0]:
                data += os.read(self.master, size - len(data))
        return data

    def close(self) -> None:
        """Hang up: the device goes away."""
        if self._open:
            os.close(self.master)
            os.close(self._slave)
            self._open = False


@pytest.fixture
def pty() -> Iterator[Pty]:
    terminal = Pty()
    yield terminal
    terminal.close()


# -- RFC 2217 through ser2net -------------------------------------------------------------


@pytest.fixture
def ser2net(pty: Pty, tmp_path: Path) -> Iterator[Ser2net]:
    if shutil.which("ser2net") is None:
        pytest.fail("ser2net is not installed (Debian: apt-get install ser2net; make setup)")
    server = Ser2net(Path(pty.device), "127.0.0.1", free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


def test_rfc2217_records_the_console_bytes_without_telnet(
        ser2net: Ser2net, pty: Pty, tmp_path: Path) -> None:
    console = RFC2217Port("127.0.0.1", ser2net.port)
    with Com1Recorder(console, tmp_path / "host1.log", name="host1") as recorder:
        wait_marker(recorder, "com1 connected to rfc2217://127.0.0.1:")
        pty.write(EVERY_BYTE)
        wait_raw(recorder, EVERY_BYTE)

        # Keystrokes with IAC reach the device once, unescaped.
        recorder.write(b"\xff\x01root\r")
        assert pty.read_exactly(7) == b"\xff\x01root\r"


def test_rfc2217_server_restarted_mid_stream_is_a_gap_and_recording_goes_on(
        ser2net: Ser2net, pty: Pty, tmp_path: Path) -> None:
    console = RFC2217Port("127.0.0.1", ser2net.port)
    with Com1Recorder(console, tmp_path / "host1.log", name="host1",
                      backoff_max=0.5) as recorder:
        wait_marker(recorder, "com1 connected")
        pty.write(b"before the drop\xff\r\n")
        wait_raw(recorder, b"before the drop\xff\r\n")

        ser2net.stop()
        wait_marker(recorder, "com1 disconnected: ")
        ser2net.start()
        wait_marker(recorder, "com1 reconnected after ")
        pty.write(b"after the drop\r\n")
        wait_raw(recorder, b"before the drop\xff\r\nafter the drop\r\n")

    text = recorder.log_path.read_text(errors="replace")
    assert text.index("before the drop") < text.index("# com1 disconnected") \
        < text.index("# com1 reconnected") < text.index("after the drop")


# -- a local serial device ----------------------------------------------------------------


def test_serial_device_is_recorded_exactly_and_takes_keystrokes(
        pty: Pty, tmp_path: Path) -> None:
    console = SerialDevicePort(pty.device, 115200)
    with Com1Recorder(console, tmp_path / "host1.log", name="host1") as recorder:
        wait_marker(recorder, f"com1 connected to {pty.device}")
        pty.write(EVERY_BYTE)
        wait_raw(recorder, EVERY_BYTE)
        recorder.write(b"\x01\x01\x01h")
        assert pty.read_exactly(4) == b"\x01\x01\x01h"


def test_serial_device_that_goes_away_is_a_gap(pty: Pty, tmp_path: Path) -> None:
    console = SerialDevicePort(pty.device, 115200)
    with Com1Recorder(console, tmp_path / "host1.log", name="host1",
                      backoff_max=0.5) as recorder:
        wait_marker(recorder, "com1 connected")
        pty.write(b"last words\r\n")
        wait_raw(recorder, b"last words\r\n")
        pty.close()  # the adapter is unplugged
        wait_marker(recorder, "com1 disconnected: ")
        wait_marker(recorder, f"com1 connect to {pty.device} failed: ")
        assert not recorder.connected


# -- IPMI Serial-over-LAN through ipmi_sim ------------------------------------------------


BMC_COMMANDS = """\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
"""


class SimulatedBMC:
    """ipmi_sim on 127.0.0.1 whose SOL serial port is `serial` (a TCP server of the test)."""

    def __init__(self, directory: Path, serial: ConsoleServer) -> None:
        self.directory = directory
        password_file = directory / "bmc-password"
        password_file.write_text("sol-test-secret\n")
        password_file.chmod(0o600)
        self.bmc = BMC(host="host1", address="127.0.0.1", port=free_udp_port(),
                       username="admin", password_file=password_file)
        config = directory / "lan.conf"
        config.write_text("\n".join([
            'name "xenhil-sol-test"',
            "set_working_mc 0x20",
            "  startlan 1",
            f"    addr 127.0.0.1 {self.bmc.port}",
            "    priv_limit admin",
            "    allowed_auths_admin md5",
            f"    guid {os.getpid():032x}",  # without one, no RMCP+ session starts
            "  endlan",
            f'  sol "tcp:127.0.0.1:{serial.port}" 115200',
            "  startnow false",
            '  user 2 true "admin" "sol-test-secret" admin 10 md5',
            ""]))
        (directory / "bmc.emu").write_text(BMC_COMMANDS)
        (directory / "state").mkdir()
        self.serial = serial
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, connections: int = 1) -> None:
        with open(self.directory / "ipmi_sim.log", "ab") as log:
            self.process = subprocess.Popen(
                ["ipmi_sim", "-n", "-c", str(self.directory / "lan.conf"),
                 "-f", str(self.directory / "bmc.emu"), "-s", str(self.directory / "state")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.serial.wait_client(connections)  # the BMC is up when it has its serial port

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            self.process.wait(10)
        self.process = None


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def serial_port() -> Iterator[ConsoleServer]:
    server = ConsoleServer()
    yield server
    server.close()


@pytest.fixture
def bmc(tmp_path: Path, serial_port: ConsoleServer) -> Iterator[SimulatedBMC]:
    for tool in ("ipmi_sim", "ipmitool"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (Debian: openipmi, ipmitool; make setup)")
    simulated = SimulatedBMC(tmp_path, serial_port)
    simulated.start()
    yield simulated
    simulated.stop()


def sol_sessions() -> list[int]:
    """PIDs of this test process's `ipmitool ... sol activate` children."""
    found = []
    for task in os.listdir("/proc/self/task"):
        try:
            listed = Path(f"/proc/self/task/{task}/children").read_text().split()
        except FileNotFoundError:  # a thread that ended since the listing
            continue
        for child in listed:
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            if b"ipmitool" in argv[0] and b"activate" in argv:
                found.append(int(child))
    return found


def test_sol_records_the_console_bytes_without_ipmitool_s_banner(
        bmc: SimulatedBMC, serial_port: ConsoleServer, tmp_path: Path) -> None:
    with Com1Recorder(SOLPort(bmc.bmc), tmp_path / "host1.log", name="host1") as recorder:
        wait_marker(recorder, "com1 connected to ipmi-sol://127.0.0.1:")
        serial_port.send(EVERY_BYTE)
        wait_raw(recorder, EVERY_BYTE)

        # `~.` after a newline would end ipmitool's session: it reaches the host instead.
        recorder.write(b"root\r~.\r")
        serial_port.wait_received(b"root\r~.\r")
        serial_port.send(b"still here\r\n")
        wait_raw(recorder, EVERY_BYTE + b"still here\r\n")
    assert "SOL Session operational" not in recorder.log_path.read_text(errors="replace")


def test_sol_password_is_never_on_ipmitool_s_command_line(
        bmc: SimulatedBMC, tmp_path: Path) -> None:
    with Com1Recorder(SOLPort(bmc.bmc), tmp_path / "host1.log", name="host1") as recorder:
        wait_marker(recorder, "com1 connected")
        [session] = sol_sessions()
        argv = Path(f"/proc/{session}/cmdline").read_bytes().split(b"\0")
        assert b"sol-test-secret" not in b" ".join(argv)
        assert argv[argv.index(b"-f") + 1] == str(bmc.bmc.password_file).encode()
        assert b"-C" in argv and b"lanplus" in argv


def test_sol_held_by_another_session_is_taken_over(
        bmc: SimulatedBMC, serial_port: ConsoleServer, tmp_path: Path) -> None:
    argv, env = IPMITool(bmc.bmc).command(["sol", "activate"])
    other_end, terminal = os.openpty()
    person = subprocess.Popen(argv, env=env, stdin=terminal, stdout=terminal,
                              stderr=subprocess.DEVNULL)
    os.close(terminal)
    try:
        banner, deadline = b"", time.monotonic() + 30
        while b"operational" not in banner:
            assert time.monotonic() < deadline, f"no other SOL session: {banner!r}"
            if select.select([other_end], [], [], 0.5)[0]:
                banner += os.read(other_end, 1024)
        with Com1Recorder(SOLPort(bmc.bmc), tmp_path / "host1.log", name="host1") as recorder:
            wait_marker(recorder, "com1 connected")
            serial_port.send(b"ours now\r\n")
            wait_raw(recorder, b"ours now\r\n")
    finally:
        person.kill()
        person.wait()
        os.close(other_end)


def test_sol_session_that_ends_is_a_gap_and_is_activated_again(
        bmc: SimulatedBMC, serial_port: ConsoleServer, tmp_path: Path) -> None:
    with Com1Recorder(SOLPort(bmc.bmc), tmp_path / "host1.log", name="host1",
                      backoff_max=0.5) as recorder:
        wait_marker(recorder, "com1 connected")
        serial_port.send(b"first session\r\n")
        wait_raw(recorder, b"first session\r\n")

        [session] = sol_sessions()
        os.kill(session, signal.SIGKILL)  # the session drops (a network blip, a BMC reset)
        wait_marker(recorder, "com1 disconnected: ipmitool exited with -9")
        wait_marker(recorder, "com1 reconnected after ")
        serial_port.send(b"second session\r\n")
        wait_raw(recorder, b"first session\r\nsecond session\r\n")


# -- the lab file names the console; labgrid and Xen's command line follow ----------------


def lab_with_console(tmp_path: Path, resource: str, fields: dict[str, object],
                     xen_console: str | None = None) -> Path:
    data = yaml.safe_load(DEFAULT_LAB.read_text())
    resources = data["targets"]["vlab1"]["resources"]
    del resources["Com1Port"]
    resources[resource] = fields
    # A BMC of nobody (the virtual lab's may be in use): SOL's connect fails, and retries.
    resources["IPMIPowerPort"].update(address="127.0.0.1", port=free_udp_port())
    if xen_console is not None:
        data["xenhil"]["hosts"]["vlab1"]["xen_console"] = xen_console
    data["xenhil"]["reports"] = str(tmp_path / "reports")
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(("resource", "fields", "xen_console", "endpoint", "cmdline"), [
    ("Com1Port", {"host": "127.0.0.1", "port": 0}, None,
     "127.0.0.1:{port}", "console=com1 com1=115200,8n1"),
    ("NetworkSerialPort", {"host": "127.0.0.1", "port": 0, "protocol": "raw"}, None,
     "127.0.0.1:{port}", "console=com1 com1=115200,8n1"),
    ("NetworkSerialPort", {"host": "127.0.0.1", "port": 0, "speed": 57600}, None,
     "rfc2217://127.0.0.1:{port}", "console=com1 com1=57600,8n1"),
    ("RawSerialPort", {"port": "{device}"}, None,
     "{device}", "console=com1 com1=115200,8n1"),
    ("IPMISOLPort", {}, "com2",
     "ipmi-sol://127.0.0.1:{bmc_port}", "console=com2 com2=115200,8n1"),
])
def test_the_lab_file_s_console_reaches_the_recorder_the_driver_and_xen(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pty: Pty, resource: str,
        fields: dict[str, object], xen_console: str | None, endpoint: str,
        cmdline: str) -> None:
    monkeypatch.setenv("XENHIL_CACHE", str(tmp_path / "cache"))
    port = free_port()
    fields = {key: (port if value == 0 else
                    value.format(device=pty.device) if isinstance(value, str) else value)
              for key, value in fields.items()}
    path = lab_with_console(tmp_path, resource, fields, xen_console)
    spec = load_lab(path, check_files=False).host("vlab1")
    expected = endpoint.format(port=port, device=pty.device, bmc_port=spec.bmc.port)
    assert spec.console.endpoint == expected
    assert xen_cmdline(spec).startswith(cmdline + " ")

    # labgrid builds the target from the same file; its console driver finds the recorder.
    environment = Environment(str(path))
    try:
        recorder = Com1Recorder(spec.console, tmp_path / "vlab1.log", name="vlab1",
                                connect_timeout=1.0)
        with recorder:
            target = environment.get_target("vlab1")
            driver = target.get_driver(Com1ConsoleDriver)
            assert driver.subscribe() is not None
            assert recorder.endpoint == expected
    finally:
        environment.cleanup()


def test_virtual_lab_waits_for_the_reader_of_the_uart_the_console_is_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The e2e lab: vlab1 through a ser2net in front of QEMU's com1, vlab2 through SOL:
    vlab1's QEMU waits for its com1 reader, vlab2's for the BMC on com2, not on com1."""
    from harness.vlab.control import virtual_hosts

    monkeypatch.setenv("XENHIL_CACHE", str(tmp_path / "cache"))
    data = yaml.safe_load(DEFAULT_LAB.read_text())
    vlab1, vlab2 = (data["targets"][name]["resources"] for name in ("vlab1", "vlab2"))
    del vlab1["Com1Port"], vlab2["Com1Port"]
    vlab1["NetworkSerialPort"] = {"host": "127.0.1.1", "port": 6234}
    vlab2["IPMISOLPort"] = {}
    data["xenhil"]["hosts"]["vlab2"]["xen_console"] = "com2"
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))

    first, second = virtual_hosts(load_lab(path, check_files=False))
    chardevs = [[arg for arg in host.qemu_argv() if arg.startswith("socket,id=com")]
                for host in (first, second)]
    assert chardevs[0][0].startswith("socket,id=com1,host=127.0.1.1,port=6231,server=on,wait=on,")
    assert chardevs[1][0].startswith("socket,id=com1,host=127.0.1.2,port=6231,server=on,wait=off,")
    assert chardevs[1][1].startswith("socket,id=com2,host=127.0.1.2,port=6232,server=on,wait=on,")
    assert chardevs[0][1].startswith("socket,id=com2,host=127.0.1.1,port=6232,server=on,wait=off,")
    assert (first.spec.console.endpoint, xen_cmdline(first.spec).split()[:2]) == (
        "rfc2217://127.0.1.1:6234", ["console=com1", "com1=115200,8n1"])
    assert (second.spec.console.endpoint, xen_cmdline(second.spec).split()[:2]) == (
        "ipmi-sol://127.0.1.2:6230", ["console=com2", "com2=115200,8n1"])
    # GRUB too shows on the UART that is recorded: the bootloader stage sees it.
    assert [boot_settings(host.spec)["GRUB_SERIAL_COMMAND"] for host in (first, second)] == [
        "serial --unit=0 --speed=115200", "serial --unit=1 --speed=115200"]
