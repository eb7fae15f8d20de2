"""A console exported by a labgrid-exporter, found through the host's place: a real
labgrid-coordinator and labgrid-exporter on loopback, the exporter serving a
NetworkSerialPort that points at a real ser2net in front of a SerialLine; the place made
by `xenhil lab places`, matched with labgrid-client, locked by the harness's locks."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from labgrid import Environment

from harness.cli import main
from harness.com1 import Com1Recorder
from harness.console_transport import RawTCPPort, RFC2217Port
from harness.drivers.com1console import Com1ConsoleDriver
from harness.exported_console import ConsoleNotExported, PlaceSerialPort, unserved_consoles
from harness.lab import DEFAULT_LAB, Lab, load_lab
from harness.locking import host_locks, lock
from tests.console_server import Ser2net
from tests.coordinator import running_exporter, stop
from tests.unit.test_com1 import ConsoleServer, free_port
from tests.unit.test_console_transports import EVERY_BYTE, markers, wait_raw

EXPORTER = "rack-console"
PLACE = "vlab-vlab1"
RESOLVE_TIMEOUT = 10.0




@pytest.fixture
def lab(tmp_path: Path, coordinator: str, monkeypatch: pytest.MonkeyPatch) -> Lab:
    """labs/vlab.yaml on `coordinator`, vlab1's console from its place, the places made
    with `xenhil lab places` and vlab1's matching what the exporter serves for it."""
    monkeypatch.setenv("XENHIL_CACHE", str(tmp_path / "cache"))
    data = yaml.safe_load(DEFAULT_LAB.read_text())
    resources = data["targets"]["vlab1"]["resources"]
    del resources["Com1Port"]
    resources["PlaceSerialPort"] = {"speed": 115200}
    data["xenhil"]["coordinator"] = coordinator
    data["xenhil"]["reports"] = str(tmp_path / "reports")
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["--lab", str(path), "lab", "places"]) == 0
    add_match(coordinator, f"{EXPORTER}/vlab1/NetworkSerialPort")
    return load_lab(path, check_files=False)


def add_match(coordinator: str, pattern: str) -> None:
    client = Path(sys.executable).parent / "labgrid-client"
    subprocess.run([str(client), "-x", coordinator, "-p", PLACE, "add-match", pattern],
                   check=True, capture_output=True, timeout=30)


def console_of(lab: Lab) -> PlaceSerialPort:
    console = lab.host("vlab1").console
    assert isinstance(console, PlaceSerialPort)
    return console


def test_the_exported_console_is_recorded_byte_exact_through_the_locked_place(
        lab: Lab, coordinator: str, ser2net: Ser2net, com1: ConsoleServer,
        tmp_path: Path) -> None:
    console = console_of(lab)
    with running_exporter(tmp_path / "exporter", coordinator, EXPORTER, {"vlab1": {
            "NetworkSerialPort": {"host": ser2net.address, "port": ser2net.port,
                                  "speed": 115200}}}) as exporter_process, \
            lock(host_locks(lab, ["vlab1"]), wait_minutes=0.5):
        assert console.resolve(RESOLVE_TIMEOUT) == RFC2217Port("127.0.0.1", ser2net.port, 115200)
        assert unserved_consoles([console], RESOLVE_TIMEOUT) == []

        environment = Environment(str(lab.path))
        try:
            with Com1Recorder(console, tmp_path / "vlab1.log", name="vlab1") as recorder:
                com1.wait_client()
                com1.send(EVERY_BYTE)  # telnet's IAC among them: none may reach the log
                wait_raw(recorder, EVERY_BYTE)
                # labgrid's target gets the same recorder through the console driver
                driver = environment.get_target("vlab1").get_driver(Com1ConsoleDriver)
                driver.write(b"\xff\x01root\r")
                com1.wait_received(b"\xff\x01root\r")

                # An exporter gone leaves the running connection alone; a new one is refused,
                # and the run's check says so.
                stop(exporter_process)
                offline = (f"host vlab1: console of place {PLACE} on labgrid coordinator "
                           f"{coordinator}: exporter {EXPORTER} is offline (the place's "
                           f"{EXPORTER}/vlab1/NetworkSerialPort/NetworkSerialPort is "
                           "orphaned): start labgrid-exporter there again")
                with pytest.raises(ConsoleNotExported) as refused:
                    console.resolve(RESOLVE_TIMEOUT)
                assert str(refused.value).startswith(offline)
                assert unserved_consoles([console], RESOLVE_TIMEOUT)[0].startswith(offline)
                com1.send(b"still recorded\r\n")
                wait_raw(recorder, EVERY_BYTE + b"still recorded\r\n")
        finally:
            environment.cleanup()
    said = markers(recorder)
    assert "com1 connected to labgrid-place://vlab1" in said
    assert [m for m in said if "disconnected" in m or "failed" in m] == []


def test_no_exporter_running_is_said_naming_place_and_coordinator(
        lab: Lab, coordinator: str, ser2net: Ser2net, tmp_path: Path) -> None:
    console = console_of(lab)
    where = f"host vlab1: console of place {PLACE} on labgrid coordinator {coordinator}: "
    with lock(host_locks(lab, ["vlab1"]), wait_minutes=0.5):
        with pytest.raises(ConsoleNotExported) as refused:
            console.connect(RESOLVE_TIMEOUT)
        assert str(refused.value) == (
            f"{where}no exporter serves a NetworkSerialPort matching "
            f"{EXPORTER}/vlab1/NetworkSerialPort: is the labgrid-exporter serving it "
            f"running, and connected to this coordinator? (labgrid-client -x {coordinator} "
            "resources lists what the exporters serve)")
        assert unserved_consoles([console], RESOLVE_TIMEOUT) == [str(refused.value)]

        # Started while the place is locked: the coordinator gives it to the next lock.
        with running_exporter(tmp_path / "exporter", coordinator, EXPORTER, {"vlab1": {
                "NetworkSerialPort": {"host": ser2net.address, "port": ser2net.port}}}):
            with pytest.raises(ConsoleNotExported) as late:
                console.resolve(RESOLVE_TIMEOUT)
            assert str(late.value).startswith(
                f"{where}{EXPORTER}/vlab1/NetworkSerialPort/NetworkSerialPort matches "
                f"{EXPORTER}/vlab1/NetworkSerialPort, but was not served when the place "
                "was locked")


def test_a_place_not_locked_or_matching_no_serial_port_is_said(
        lab: Lab, coordinator: str) -> None:
    console = console_of(lab)
    where = f"host vlab1: console of place {PLACE} on labgrid coordinator {coordinator}: "
    with pytest.raises(ConsoleNotExported, match="^" + where.replace(".", r"\.") +
                       "the place is not locked"):
        console.resolve(RESOLVE_TIMEOUT)

    other = PlaceSerialPort("vlab2", "vlab-vlab2", coordinator)  # a place without matches
    with lock(host_locks(lab, ["vlab2"]), wait_minutes=0.5), \
            pytest.raises(ConsoleNotExported) as unmatched:
        other.resolve(RESOLVE_TIMEOUT)
    assert str(unmatched.value) == (
        f"host vlab2: console of place vlab-vlab2 on labgrid coordinator {coordinator}: the "
        f"place matches no NetworkSerialPort: add the exporter's with labgrid-client -x "
        f"{coordinator} -p vlab-vlab2 add-match EXPORTER/GROUP/NetworkSerialPort")


def test_a_coordinator_not_running_is_said_naming_it() -> None:
    console = PlaceSerialPort("vlab1", PLACE, f"127.0.0.1:{free_port()}")
    with pytest.raises(ConsoleNotExported) as refused:
        console.resolve(RESOLVE_TIMEOUT)
    said = str(refused.value)
    assert said.startswith(f"host vlab1: console of place {PLACE} on labgrid coordinator "
                           f"{console.coordinator}: ")
    assert said.endswith("is labgrid-coordinator running there, and is xenhil.coordinator "
                         "(or --coordinator) its address?")
    assert said.count(console.coordinator) == 1


def test_a_coordinator_that_does_not_answer_is_given_up_on_in_time() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never speaks
        console = PlaceSerialPort("vlab1", PLACE, f"127.0.0.1:{silent.getsockname()[1]}")
        start = time.monotonic()
        with pytest.raises(ConsoleNotExported) as refused:
            console.connect(1.0)
        assert time.monotonic() - start < 5
    assert str(refused.value) == (f"host vlab1: console of place {PLACE} on labgrid "
                                  f"coordinator {console.coordinator}: the coordinator did "
                                  "not answer within 1 s")


def test_of_several_serial_ports_the_named_one_is_taken_as_it_is_served(
        lab: Lab, coordinator: str, tmp_path: Path) -> None:
    raw_port, other_port = free_port(), free_port()
    where = f"host vlab1: console of place {PLACE} on labgrid coordinator {coordinator}: "
    with running_exporter(tmp_path / "exporter", coordinator, EXPORTER, {"vlab1": {
            "com1": {"cls": "NetworkSerialPort", "host": "127.0.0.1", "port": raw_port,
                     "protocol": "raw"},
            "com2": {"cls": "NetworkSerialPort", "host": "127.0.0.1", "port": other_port,
                     "speed": 9600}}}), \
            lock(host_locks(lab, ["vlab1"]), wait_minutes=0.5):
        def refusal(resource: str | None) -> str:
            with pytest.raises(ConsoleNotExported) as refused:
                PlaceSerialPort("vlab1", PLACE, coordinator, 115200, resource).resolve(
                    RESOLVE_TIMEOUT)
            return str(refused.value)

        assert PlaceSerialPort("vlab1", PLACE, coordinator, 115200, "com1").resolve(
            RESOLVE_TIMEOUT) == RawTCPPort("127.0.0.1", raw_port, 115200)
        assert refusal(None) == (f"{where}the place has 2 NetworkSerialPorts (com1, com2): "
                                 "name the console's with `resource:` under PlaceSerialPort "
                                 "in the lab file")
        assert refusal("com2") == (f"{where}{EXPORTER}/vlab1/NetworkSerialPort/com2 is "
                                   "served at 9600 bit/s, the lab file says 115200 "
                                   "(PlaceSerialPort speed): make the two agree")
        assert refusal("com3") == (f"{where}the place has no NetworkSerialPort named com3 "
                                   "(it has: com1, com2)")
