"""The pure pieces of bench/boot_and_panic.py, on the virtual lab's real QEMU command
line and real com1 output; its console drain against a loopback server."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.boot_and_panic import (
    BOOT_RATIO_GOAL,
    BootComparison,
    ConsoleDrain,
    PanicLatencies,
    bare_qemu_argv,
    crash_line_time,
    xen_version_on_console,
)
from harness.console_watch import Severity
from harness.lab import DEFAULT_LAB, load_lab
from harness.vlab.control import virtual_hosts

DATA = Path(__file__).parent.parent / "data"
# A dom0 crash by `echo c > /proc/sysrq-trigger` in the fault self-tests of the virtual
# lab (reports/e2e-self-tests/com1/vlab1.log): the panic, then the debug-key dump.
SYSRQ_PANIC_LOG = (DATA / "console" / "com1-log-dom0-sysrq-panic.log").read_text()
XEN_BOOT = (DATA / "boot" / "com1-xen-4.17.7-boot.raw").read_bytes()


def vlab1_argv() -> list[str]:
    hosts = virtual_hosts(load_lab(DEFAULT_LAB, check_files=False))
    return next(host for host in hosts if host.name == "vlab1").qemu_argv()


def test_bare_argv_leaves_out_the_bmc_and_keeps_the_rest_in_order() -> None:
    argv = vlab1_argv()
    bare = bare_qemu_argv(argv)
    values = {index for index, arg in enumerate(argv) if "ipmi" in arg}
    left_out = values | {index - 1 for index in values}  # with their -chardev / -device
    assert [argv[index] for index in sorted(left_out)] == [
        "-chardev", "socket,id=ipmi0,host=127.0.1.1,port=6233,reconnect=2",
        "-device", "ipmi-bmc-extern,chardev=ipmi0,id=bmc0",
        "-device", "isa-ipmi-kcs,bmc=bmc0",
    ]
    assert bare == [arg for index, arg in enumerate(argv) if index not in left_out]
    # The same disk, console and SSH forward as the BMC's machine.
    for shared in ("file=", "socket,id=com1,", "hostfwd=tcp:127.0.1.1:6222-:22"):
        assert [arg for arg in argv if shared in arg] == [arg for arg in bare if shared in arg]
        assert any(shared in arg for arg in bare)


def test_bare_argv_of_a_command_line_without_a_bmc_is_refused() -> None:
    bare = bare_qemu_argv(vlab1_argv())
    with pytest.raises(ValueError, match="no ipmi-bmc-extern"):
        bare_qemu_argv(bare)


def test_crash_line_time_is_the_panic_line_of_the_com1_log() -> None:
    arrived, line = crash_line_time(SYSRQ_PANIC_LOG)
    assert arrived == datetime(2026, 12, 1, 13, 4, 42, 21000, tzinfo=UTC).timestamp()
    assert "Kernel panic - not syncing: sysrq triggered crash" in line
    # "sysrq: Trigger a crash", stamped the same millisecond just before, is no crash.
    assert line == next(text for text in SYSRQ_PANIC_LOG.splitlines() if "Kernel panic" in text)


def test_crash_line_time_without_a_crash_is_an_error() -> None:
    before = SYSRQ_PANIC_LOG.split("Kernel panic")[0]
    with pytest.raises(ValueError, match="no console line of severity ERROR"):
        crash_line_time(before)


def test_crash_line_time_skips_the_recorders_marker_lines() -> None:
    panic = next(text for text in SYSRQ_PANIC_LOG.splitlines() if "Kernel panic" in text)
    as_marker = panic.replace(" | ", " # ", 1)  # the same text as a recorder marker
    with pytest.raises(ValueError):
        crash_line_time(as_marker)
    assert crash_line_time(f"{as_marker}\n{panic}\n")[1] == panic


def test_crash_line_time_follows_the_watchers_threshold() -> None:
    # A dom0 panic is FATAL: a watcher stopping only at FATAL stops at it too.
    assert crash_line_time(SYSRQ_PANIC_LOG, Severity.FATAL) == crash_line_time(SYSRQ_PANIC_LOG)


def test_xen_version_on_console() -> None:
    assert xen_version_on_console(XEN_BOOT) == "4.17.7"
    before_xen = XEN_BOOT.split(b"(XEN)")[0]
    assert b"GRUB" in before_xen
    assert xen_version_on_console(before_xen) is None


def test_boot_comparison_medians_and_ratio() -> None:
    boots = BootComparison(harness=(84.0, 90.5, 80.1), bare=(78.0, 75.2, 80.0))
    assert boots.harness_median == 84.0
    assert boots.bare_median == 78.0
    assert boots.ratio == pytest.approx(84.0 / 78.0)
    assert boots.ratio <= BOOT_RATIO_GOAL
    text = boots.render()
    assert "harness 84.0 s, bare QEMU 78.0 s; ratio 1.077" in text
    assert text.endswith("(goal: at most 1.10, met)")


def test_boot_comparison_over_the_goal_says_so() -> None:
    boots = BootComparison(harness=(95.0, 99.0), bare=(80.0, 82.0))
    assert boots.ratio == pytest.approx(97.0 / 81.0)
    assert boots.render().endswith("(goal: at most 1.10, NOT met)")


def test_panic_latencies_worst_against_the_goal() -> None:
    assert PanicLatencies((0.05, 0.081)).render().endswith(
        "0.050 s, 0.081 s; worst 0.081 s (goal: at most 2 s, met)")
    assert PanicLatencies((0.05, 2.5)).worst == 2.5
    assert "NOT met" in PanicLatencies((0.05, 2.5)).render()


def test_console_drain_connects_once_the_port_listens_and_keeps_every_byte(
        tmp_path: Path) -> None:
    # QEMU's com1 with wait=on listens only once QEMU runs: the drain is there first.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = probe.getsockname()
    drain = ConsoleDrain(address, tmp_path / "com1.raw")
    drain.start()
    try:
        time.sleep(0.3)  # a few refused connects
        with socket.create_server(address) as server:
            server.settimeout(5)
            client, _ = server.accept()
            with client:
                client.sendall(XEN_BOOT)
        deadline = time.monotonic() + 5
        while (tmp_path / "com1.raw").read_bytes() != XEN_BOOT and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        drain.stop()
    assert (tmp_path / "com1.raw").read_bytes() == XEN_BOOT
