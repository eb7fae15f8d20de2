"""The console server of tests/e2e/test_consoles.py on loopback: a real ser2net whose
device is a SerialLine to a TCP console port of the test, standing in for QEMU's com1,
read by the harness's recorder over RFC 2217."""

from __future__ import annotations

import signal
from pathlib import Path

from harness.com1 import Com1Recorder
from harness.console_transport import RFC2217Port
from tests.console_server import Ser2net
from tests.unit.test_com1 import ConsoleServer
from tests.unit.test_console_transports import EVERY_BYTE, markers, wait_marker, wait_raw


def test_the_first_bytes_are_recorded_and_power_cycles_leave_no_gap(
        ser2net: Ser2net, com1: ConsoleServer, tmp_path: Path) -> None:
    console = RFC2217Port(ser2net.address, ser2net.port)
    with Com1Recorder(console, tmp_path / "host1.log", name="host1") as recorder:
        com1.wait_client()  # the machine starts now, and talks at once
        com1.send(EVERY_BYTE)
        wait_raw(recorder, EVERY_BYTE)

        com1.drop_client()  # power off; the next power-on waits for the line again
        com1.wait_client(2)
        com1.send(b"second boot\r\n")
        wait_raw(recorder, EVERY_BYTE + b"second boot\r\n")

        recorder.write(b"\xff\x01root\r")  # keystrokes reach the machine unescaped
        com1.wait_received(b"\xff\x01root\r")
    assert [m for m in markers(recorder) if "disconnected" in m] == []


def test_a_killed_console_server_is_a_gap_and_the_line_comes_back(
        ser2net: Ser2net, com1: ConsoleServer, tmp_path: Path) -> None:
    console = RFC2217Port(ser2net.address, ser2net.port)
    with Com1Recorder(console, tmp_path / "host1.log", name="host1",
                      backoff_max=0.5) as recorder:
        com1.wait_client()
        com1.send(b"before\r\n")
        wait_raw(recorder, b"before\r\n")

        ser2net.stop(signal.SIGKILL)
        wait_marker(recorder, "com1 disconnected: ")
        com1.wait_hangup()  # the line lets go of the machine's port too
        ser2net.start()
        wait_marker(recorder, "com1 reconnected after ")
        com1.wait_client(2)
        com1.send(b"after\r\n")
        wait_raw(recorder, b"before\r\nafter\r\n")
