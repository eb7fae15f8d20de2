"""Com1Recorder, Com1Stream and Com1ConsoleDriver against a real TCP console server.

The server is a plain socket server made by the test that, like QEMU's chardev socket
server, serves one client at a time. No socket is mocked.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from labgrid import Target
from pexpect import TIMEOUT

from harness.com1 import Com1NotConnected, Com1Recorder, recorder_for
from harness.com1_stream import Com1Timeout
from harness.console_transport import RawTCPPort
from harness.console_watch import ConsoleCrash, ConsoleWatcher
from harness.drivers.com1console import Com1ConsoleDriver, Com1Port
from tests.unit.test_console_watch import com1_bytes, console_text

LINE = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) ([|#]) (.*)$")


class ConsoleServer:
    """A console port on 127.0.0.1: accepts one client at a time and records its input."""

    def __init__(self, port: int = 0) -> None:
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.settimeout(0.05)  # lets the accept loop notice close()
        self.port: int = self._listener.getsockname()[1]
        self._cond = threading.Condition()
        self._conn: socket.socket | None = None
        self._closing = False
        self.connections = 0
        self.received = bytearray()
        self.sent_at = 0.0
        self._timers: list[threading.Timer] = []
        self._thread = threading.Thread(target=self._serve, name="console-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closing:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._cond:
                self._conn = conn
                self.connections += 1
                self._cond.notify_all()
            while data := self._recv(conn):
                with self._cond:
                    self.received += data
                    self._cond.notify_all()
            with self._cond:
                self._conn = None
                self._cond.notify_all()
            conn.close()

    @staticmethod
    def _recv(conn: socket.socket) -> bytes:
        try:
            return conn.recv(4096)
        except OSError:
            return b""

    def _wait(self, predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise AssertionError(f"console server: timed out waiting for {what}")

    def wait_client(self, connections: int = 1) -> None:
        self._wait(
            lambda: self.connections >= connections and self._conn is not None,
            f"client connection #{connections}",
        )

    def wait_received(self, data: bytes) -> None:
        self._wait(lambda: data in self.received, f"{data!r} from the client")

    def wait_hangup(self) -> None:
        self._wait(lambda: self._conn is None, "the client to hang up")

    def send(self, data: bytes) -> None:
        with self._cond:
            assert self._conn is not None, "no client connected"
            self._conn.sendall(data)
            self.sent_at = time.monotonic()

    def send_later(self, delay: float, data: bytes) -> None:
        """Send from another thread after `delay` s, while the test is waiting."""
        timer = threading.Timer(delay, self.send, [data])
        timer.name = "console-send"
        self._timers.append(timer)
        timer.start()

    def drop_client(self) -> None:
        with self._cond:
            assert self._conn is not None, "no client connected"
            self._conn.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
            timer.join()
        self._closing = True
        self._listener.shutdown(socket.SHUT_RDWR)  # refuse new clients from now on
        with self._cond:
            if self._conn is not None:
                self._conn.shutdown(socket.SHUT_RDWR)
        self._thread.join()
        self._listener.close()


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def log_lines(recorder: Com1Recorder) -> list[bytes]:
    """The .log's lines split at LF only, so a stray CR would show."""
    lines = recorder.log_path.read_bytes().split(b"\n")
    return lines[:-1] if lines[-1] == b"" else lines


def console_lines(recorder: Com1Recorder) -> list[bytes]:
    """The console data lines of the .log, without their time prefix."""
    lines = []
    for line in log_lines(recorder):
        match = LINE.match(line)
        assert match is not None, f"not a log line: {line!r}"
        if match[2] == b"|":
            lines.append(match[3])
    return lines


def markers(recorder: Com1Recorder) -> list[str]:
    return [
        m[3].decode() for line in log_lines(recorder) if (m := LINE.match(line)) and m[2] == b"#"
    ]


@pytest.fixture(autouse=True)
def no_thread_left() -> Iterator[None]:
    yield
    left = [t.name for t in threading.enumerate() if t.name.startswith(("com1-", "console-"))]
    assert left == [], f"threads still running after the test: {left}"


@pytest.fixture
def server() -> Iterator[ConsoleServer]:
    srv = ConsoleServer()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def recorder(server: ConsoleServer, tmp_path: Path) -> Iterator[Com1Recorder]:
    with Com1Recorder(
        RawTCPPort("127.0.0.1", server.port), tmp_path / "com1" / "host1.log", name="host1"
    ) as rec:
        server.wait_client()  # accepted on the server side ...
        wait_for(lambda: rec.connected, "the recorder to connect")  # ... and on ours
        yield rec


BOOT = console_text("debian-6.1.176-boot-no-rootfs-panic.txt").splitlines()
XEN = console_text("xen-4.17.6-fatal-page-fault.txt").splitlines()


def received(recorder: Com1Recorder, count: int) -> None:
    wait_for(lambda: recorder.bytes_received >= count, f"{count} bytes recorded")


# -- recording ---------------------------------------------------------------------------


def test_every_byte_is_in_the_raw_file(server: ConsoleServer, recorder: Com1Recorder) -> None:
    sent = com1_bytes(console_text("xen-4.17.6-fatal-page-fault.txt")) + b"\xff\x00host1 login: "
    for i in range(0, len(sent), 1000):
        server.send(sent[i : i + 1000])

    received(recorder, len(sent))

    assert recorder.raw_path == recorder.log_path.with_suffix(".raw")
    assert recorder.raw_path.read_bytes() == sent
    assert recorder.bytes_received == len(sent)


def test_log_has_a_utc_timestamp_per_line_and_no_cr_before_newline(
    server: ConsoleServer, recorder: Com1Recorder
) -> None:
    first, second = XEN[0].encode(), XEN[1].encode()
    before = datetime.now(UTC)
    server.send(first + b"\r\r\n" + second + b"\r")
    received(recorder, len(first) + len(second) + 4)
    server.send(b"\r\n")  # the line end arrives in a later read than its CRs
    received(recorder, len(first) + len(second) + 6)
    after = datetime.now(UTC)

    assert console_lines(recorder) == [first, second]
    for line in log_lines(recorder)[-2:]:
        match = LINE.match(line)
        assert match is not None and match[2] == b"|"
        stamp = datetime.strptime(match[1].decode(), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= stamp <= after


def test_a_partial_line_is_on_disk_before_its_newline(
    server: ConsoleServer, recorder: Com1Recorder
) -> None:
    server.send(b"host1 login: ")
    received(recorder, 13)

    data = recorder.log_path.read_bytes()
    assert data.endswith(b" | host1 login: ")
    assert console_lines(recorder) == [b"host1 login: "]


def test_a_drop_and_reconnect_are_marked(server: ConsoleServer, recorder: Com1Recorder) -> None:
    whole, (head, tail) = BOOT[0].encode(), (BOOT[1][:20].encode(), BOOT[1][20:].encode())
    server.send(whole + b"\r\n" + head)
    received(recorder, len(whole) + 2 + len(head))

    server.drop_client()
    server.wait_client(connections=2)
    wait_for(lambda: recorder.connected, "the recorder to reconnect")
    server.send(tail + b"\r\n")
    received(recorder, len(whole) + len(head) + len(tail) + 4)

    # The half line is ended in the .log so that the gap marker has a line of its own.
    assert console_lines(recorder) == [whole, head, tail]
    _, connected, disconnected, reconnected = markers(recorder)
    assert connected == f"com1 connected to 127.0.0.1:{server.port}"
    assert disconnected == "com1 disconnected: connection closed by the console server"
    assert re.fullmatch(r"com1 reconnected after \d+\.\d s", reconnected)
    assert recorder.raw_path.read_bytes() == whole + b"\r\n" + head + tail + b"\r\n"


def test_refused_connects_are_retried_until_the_server_appears(tmp_path: Path) -> None:
    port = free_port()
    rec = Com1Recorder(RawTCPPort("127.0.0.1", port), tmp_path / "host1.log").start()
    srv: ConsoleServer | None = None
    try:
        wait_for(lambda: len(markers(rec)) == 2, "the connect failure marker")
        time.sleep(0.7)  # several attempts (0.2 s, 0.4 s, ...) while nothing listens
        assert not rec.connected

        srv = ConsoleServer(port)
        srv.wait_client()
        srv.send(BOOT[0].encode() + b"\r\n")
        received(rec, len(BOOT[0]) + 2)
    finally:
        rec.stop()
        if srv is not None:
            srv.close()

    assert console_lines(rec) == [BOOT[0].encode()]
    assert markers(rec) == [
        f"com1 recorder started for 127.0.0.1:{port} (127.0.0.1:{port})",
        f"com1 connect to 127.0.0.1:{port} failed: [Errno 111] Connection refused; retrying",
        f"com1 connected to 127.0.0.1:{port}",
        f"com1 recorder stopped after {len(BOOT[0]) + 2} bytes",
    ]


def test_write_reaches_the_console(server: ConsoleServer, recorder: Com1Recorder) -> None:
    assert recorder.write(b"root\n") == 5
    server.wait_received(b"root\n")


def test_write_without_a_connection_says_why(tmp_path: Path) -> None:
    with Com1Recorder(RawTCPPort("127.0.0.1", free_port()), tmp_path / "host1.log") as rec:
        wait_for(lambda: len(markers(rec)) == 2, "the connect failure marker")
        with pytest.raises(Com1NotConnected, match=r"not connected.*Connection refused"):
            rec.write(b"\x01\x01\x01")


def test_stop_marks_the_end_closes_everything_and_is_idempotent(
    server: ConsoleServer, tmp_path: Path
) -> None:
    rec = Com1Recorder(RawTCPPort("127.0.0.1", server.port), tmp_path / "host1.log",
                       name="host1").start()
    stream = rec.subscribe()
    server.wait_client()
    assert recorder_for(f"127.0.0.1:{server.port}") is rec

    rec.stop()
    rec.stop()

    assert markers(rec)[-1] == "com1 recorder stopped after 0 bytes"
    assert not rec.connected
    server.wait_hangup()
    with pytest.raises(EOFError):
        stream.read(timeout=1.0)
    with pytest.raises(LookupError, match="no com1 recorder is running"):
        recorder_for(f"127.0.0.1:{server.port}")


def test_a_failing_recorder_is_not_silent(server: ConsoleServer, recorder: Com1Recorder) -> None:
    assert recorder._raw is not None
    recorder._raw.close()  # fault injection: the .raw file can no longer be written

    server.send(BOOT[0].encode() + b"\r\n")

    failed = "com1 recorder failed: ValueError('write to closed file')"
    wait_for(lambda: markers(recorder)[-1] == failed, "the failure marker")
    assert not recorder.connected
    with pytest.raises(Com1NotConnected, match="recorder failed"):
        recorder.write(b"\n")


def test_a_port_is_recorded_once(server: ConsoleServer, recorder: Com1Recorder) -> None:
    second = Com1Recorder(RawTCPPort("127.0.0.1", server.port),
                          recorder.log_path.with_name("other.log"))
    with pytest.raises(RuntimeError, match="already recorded by host1"):
        second.start()
    second.stop()
    assert recorder_for(f"127.0.0.1:{server.port}") is recorder


# -- evidence slices ---------------------------------------------------------------------


def test_text_since_slices_the_timestamped_log(
    server: ConsoleServer, recorder: Com1Recorder, tmp_path: Path
) -> None:
    one, two = BOOT[0], BOOT[1]
    start = recorder.mark()
    server.send(one.encode() + b"\r\n")
    received(recorder, len(one) + 2)
    middle = recorder.mark()
    server.send(two.encode() + b"\r\n")
    received(recorder, len(one) + len(two) + 4)

    first, second = recorder.text_since(start, middle), recorder.text_since(middle)

    assert re.fullmatch(r"\S+Z \| " + re.escape(one) + "\n", first)
    assert re.fullmatch(r"\S+Z \| " + re.escape(two) + "\n", second)
    assert first + second == recorder.text_since(start)
    assert start.time <= middle.time
    other = Com1Recorder(RawTCPPort("127.0.0.1", 1), tmp_path / "other.log")
    with pytest.raises(ValueError, match="not of"):
        other.text_since(start)


# -- subscribers and expect --------------------------------------------------------------


def test_subscribers_each_get_every_byte(server: ConsoleServer, recorder: Com1Recorder) -> None:
    with recorder.subscribe() as one, recorder.subscribe() as two:
        server.send(b"Debian GNU/Linux 12 host1 hvc0\r\r\n")

        for stream in (one, two):
            data = b""
            while len(data) < 33:
                data += stream.read(timeout=5.0)
            assert data == b"Debian GNU/Linux 12 host1 hvc0\r\r\n"


def test_a_slow_subscriber_loses_the_oldest_bytes_only(
    server: ConsoleServer, recorder: Com1Recorder
) -> None:
    with recorder.subscribe(limit=10) as stream:
        server.send(b"0123456789abcdefghijklmno")
        received(recorder, 25)

        assert stream.read(timeout=1.0) == b"fghijklmno"
        assert stream.dropped == 15
    assert recorder.raw_path.read_bytes() == b"0123456789abcdefghijklmno"


def test_expect_matches_across_reads_and_consumes(
    server: ConsoleServer, recorder: Com1Recorder
) -> None:
    data = "\r\n".join(BOOT[:20]).encode() + b"\r\n"
    split = data.index(b"Command line: ") + 6  # the awaited text arrives in two reads
    with recorder.subscribe() as stream:
        server.send(data[:split])
        server.send_later(0.2, data[split:])

        version = stream.expect([r"Linux version (\S+)"], timeout=5.0)
        cmdline = stream.expect(["Password:", re.compile(r"Command line: (.*)\r")], timeout=5.0)
        with pytest.raises(Com1Timeout):  # consumed: a match is never returned twice
            stream.expect([r"Linux version", r"Command line"], timeout=0.2)

    assert version[1] == "6.1.0-50-amd64"
    assert cmdline.re.pattern == r"Command line: (.*)\r"
    assert cmdline[1] == "console=ttyS0,115200 panic=0"


def test_expect_fails_at_once_on_a_xen_panic(server: ConsoleServer, recorder: Com1Recorder) -> None:
    panic = com1_bytes(console_text("xen-4.17.6-fatal-page-fault.txt"))
    with recorder.subscribe() as stream:
        server.send_later(0.2, panic)

        with pytest.raises(ConsoleCrash) as info:
            stream.expect([" login: "], timeout=30.0, watcher=ConsoleWatcher())
        raised_after = time.monotonic() - server.sent_at

    assert raised_after < 1.0
    assert info.value.event.kind == "xen_panic"
    assert info.value.source == "host1"
    assert "(XEN) Xen call trace:" in info.value.evidence
    assert info.value.evidence.endswith("(XEN) ****************************************")


def test_collecting_the_dump_is_bounded_on_a_console_that_keeps_talking(
    server: ConsoleServer, recorder: Com1Recorder
) -> None:
    panic = com1_bytes(console_text("xen-4.17.6-fatal-page-fault.txt"))
    chatter = com1_bytes(console_text("debian-6.1.176-boot-no-rootfs-panic.txt")).split(b"\n")
    with recorder.subscribe() as stream:
        server.send_later(0.2, panic)
        for i, line in enumerate(chatter[:40]):  # a line every 0.1 s for 4 s after the panic
            server.send_later(0.3 + i * 0.1, line + b"\n")
        started = time.monotonic()

        with pytest.raises(ConsoleCrash) as info:
            stream.expect([" login: "], 30.0, ConsoleWatcher(lines_after=1000), dump_wait=0.6)

    assert time.monotonic() - started < 1.5
    assert "Linux version 6.1.0-50-amd64" in info.value.evidence  # some of the talk is in


def test_expect_timeout_names_the_wait_and_shows_the_last_lines(
    server: ConsoleServer, recorder: Com1Recorder
) -> None:
    boot = console_text("xen-4.14-watchdog-nmi-panic.txt").splitlines()[:30]
    with recorder.subscribe() as stream:
        server.send(com1_bytes("\n".join(boot) + "\n"))
        started = time.monotonic()

        with pytest.raises(Com1Timeout) as info:
            stream.expect([r"login: $"], timeout=0.5)

    assert time.monotonic() - started >= 0.5
    message = str(info.value)
    assert message.startswith(
        "com1 of host1: none of ['login: $'] seen within 0.5 s (com1 connected); last lines seen:"
    )
    assert info.value.last_lines[-2:] == [boot[-1], ""]
    assert boot[-1] in message and boot[11] in message
    assert boot[10] not in message  # only the last 20 lines


def test_expect_timeout_says_when_the_console_is_not_connected(tmp_path: Path) -> None:
    rec = Com1Recorder(RawTCPPort("127.0.0.1", free_port()), tmp_path / "host1.log",
                       name="host1")
    with rec, rec.subscribe() as stream, pytest.raises(Com1Timeout) as info:
        stream.expect(["login:"], timeout=0.3)

    assert "(com1 NOT connected (connect failed: [Errno 111] Connection refused))" in str(
        info.value
    )
    assert "(nothing)" in str(info.value)


# -- the labgrid console driver ----------------------------------------------------------


@pytest.fixture
def console(server: ConsoleServer, recorder: Com1Recorder) -> Iterator[Com1ConsoleDriver]:
    target = Target("host1")
    try:
        Com1Port(target, None, host="127.0.0.1", port=server.port)
        driver = Com1ConsoleDriver(target, None)
        target.activate(driver)
        yield driver
    finally:
        target.cleanup()


def test_driver_expect_and_sendline_over_the_recorded_stream(
    server: ConsoleServer, recorder: Com1Recorder, console: Com1ConsoleDriver
) -> None:
    server.send(b"\r\r\nDebian GNU/Linux 12 host1 hvc0\r\r\n\r\r\nhost1 login: ")

    index, before, _, _ = console.expect([r"\w+ login: "], timeout=5.0)
    console.sendline("root")

    assert index == 0
    assert b"Debian GNU/Linux 12 host1 hvc0" in before
    server.wait_received(b"root\n")
    assert recorder.raw_path.read_bytes().endswith(b"host1 login: ")


def test_driver_read_waits_for_size_and_times_out(
    server: ConsoleServer, console: Com1ConsoleDriver
) -> None:
    server.send(b"0123")
    server.send_later(0.2, b"456789")

    assert console.read(size=10, timeout=5.0) == b"0123456789"
    with pytest.raises(TIMEOUT):
        console.read(size=1, timeout=0.2)


# labgrid 26.0.1's SerialLoggingReporter.flush() raises KeyError (turned into this warning)
# for a console whose first read raised, as this one's does: a labgrid logging bug.
@pytest.mark.filterwarnings("ignore:unhandled exception during event notification")
def test_driver_wait_fails_at_once_on_a_dom0_panic(
    server: ConsoleServer, console: Com1ConsoleDriver
) -> None:
    oops = com1_bytes(console_text("linux-6.13-dom0-oops-xen-4.17.5.txt"))
    server.send_later(0.2, oops)

    with pytest.raises(ConsoleCrash) as info:
        console.expect(" login: ", timeout=30.0)
    raised_after = time.monotonic() - server.sent_at

    assert raised_after < 1.0
    assert info.value.event.kind == "linux_panic"
    assert "Hardware Dom0 crashed" in info.value.evidence
    assert console.watcher is not None and console.watcher.crash is None  # watching afresh


def test_driver_needs_a_running_recorder(server: ConsoleServer) -> None:
    target = Target("host1")
    try:
        Com1Port(target, None, host="127.0.0.1", port=server.port)
        driver = Com1ConsoleDriver(target, None)
        with pytest.raises(LookupError, match=f"127.0.0.1:{server.port}"):
            target.activate(driver)
    finally:
        target.cleanup()
