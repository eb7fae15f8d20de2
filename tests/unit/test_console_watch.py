"""ConsoleWatcher against real console texts (tests/data/console, sources named in each file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.console_watch import ConsoleCrash, ConsoleWatcher, Severity, classify

CONSOLE = Path(__file__).parent.parent / "data" / "console"


def console_text(name: str) -> str:
    """A fixture's console text, without its leading '# ' source comment."""
    lines = (CONSOLE / name).read_text().splitlines(keepends=True)
    while lines and lines[0].startswith("# "):
        lines.pop(0)
    return "".join(lines)


def com1_bytes(text: str) -> bytes:
    """Text as com1 carries it: Xen and hvc0 lines end in CR CR LF."""
    return text.replace("\n", "\r\r\n").encode()


def watch(
    text: str,
    stop_at: Severity = Severity.ERROR,
    lines_before: int = 40,
    lines_after: int = 100,
) -> ConsoleWatcher:
    watcher = ConsoleWatcher(stop_at, lines_before, lines_after)
    watcher.feed(text)
    return watcher


def test_xen_fatal_page_fault_is_a_panic_with_the_whole_dump() -> None:
    watcher = watch(console_text("xen-4.17.6-fatal-page-fault.txt"))

    assert [e.kind for e in watcher.events] == ["xen_call_trace", "xen_panic", "xen_fatal_trap"]
    crash = watcher.crash
    assert crash is not None
    # The call trace came first; the panic that followed replaced it as the crash.
    assert (crash.kind, crash.severity, crash.line) == (
        "xen_panic",
        Severity.FATAL,
        "(XEN) Panic on CPU 0:",
    )
    evidence = watcher.evidence.splitlines()
    assert evidence[0] == "(XEN) ----[ Xen-4.17.6  x86_64  debug=n  Not tainted ]----"
    assert "(XEN) FATAL PAGE FAULT" in evidence
    assert evidence[-1] == "(XEN) ****************************************"


def test_xen_watchdog_is_reported_as_the_watchdog() -> None:
    watcher = watch(console_text("xen-4.14-watchdog-nmi-panic.txt"))

    assert watcher.crash is not None
    assert watcher.crash.kind == "xen_watchdog"
    assert watcher.crash.severity is Severity.FATAL
    kinds = [e.kind for e in watcher.events]
    assert kinds == ["xen_watchdog", "xen_call_trace", "xen_panic", "xen_fatal_trap"]
    assert "(XEN) Reboot in five seconds..." in watcher.evidence


def test_dom0_oops_then_panic_and_xen_dom0_crashed() -> None:
    watcher = watch(console_text("linux-6.13-dom0-oops-xen-4.17.5.txt"))

    assert [e.kind for e in watcher.events] == [
        "linux_bug",
        "linux_oops",
        "linux_panic",
        "dom0_crashed",
    ]
    assert watcher.crash is not None
    assert watcher.crash.kind == "linux_panic"
    assert watcher.crash.line == "[    9.408318] Kernel panic - not syncing: Fatal exception"
    evidence = watcher.evidence
    assert evidence.startswith("[    9.367048] BUG: kernel NULL pointer dereference")
    assert "[    9.383786] Call Trace:" in evidence
    assert evidence.endswith("(XEN) Hardware Dom0 crashed: 'noreboot' set - not rebooting.")


def test_a_whole_real_boot_gives_no_false_alarm_until_its_panic() -> None:
    text = console_text("debian-6.1.176-boot-no-rootfs-panic.txt")
    lines = text.splitlines()
    panic = next(i for i, line in enumerate(lines) if "Kernel panic - not syncing" in line)
    assert panic > 300  # a full kernel boot comes first

    watcher = watch(text)

    assert [e.kind for e in watcher.events] == ["linux_panic"]
    assert watcher.crash is not None
    assert watcher.crash.line == lines[panic]
    assert watcher.evidence.splitlines() == lines[panic - 40 :]
    assert watcher.evidence.endswith("on unknown-block(0,0) ]---")


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_lines_split_across_reads_with_com1_line_ends(chunk: int) -> None:
    data = com1_bytes(console_text("linux-6.13-dom0-oops-xen-4.17.5.txt"))
    whole = watch(console_text("linux-6.13-dom0-oops-xen-4.17.5.txt"))

    watcher = ConsoleWatcher()
    for i in range(0, len(data), chunk):
        watcher.feed(data[i : i + chunk])

    assert watcher.events == whole.events
    assert watcher.evidence == whole.evidence
    assert all("\r" not in e.line for e in watcher.events)


def test_a_partial_line_is_not_classified_before_its_newline() -> None:
    watcher = ConsoleWatcher()
    assert watcher.feed("(XEN) Panic on CPU 0:") == []
    assert watcher.crash is None
    assert [e.kind for e in watcher.feed("\r\r\n")] == ["xen_panic"]


# Single real console lines; each comment names where the line was published.
REAL_LINES = [
    # QubesOS/qubes-issues#6258 (Xen 4.19-unstable, console_timestamps)
    (
        "(XEN) [    5.040906] Hardware Dom0 crashed: rebooting machine in 5 seconds.",
        "dom0_crashed",
        Severity.FATAL,
    ),
    # QubesOS/qubes-issues#9030 (Xen 4.17.3)
    ("(XEN) Xen BUG at drivers/passthrough/amd/iommu_init.c:1386", "xen_bug", Severity.FATAL),
    # QubesOS/qubes-issues#7340 (the Xen 4.17 fatal_trap() format)
    ("(XEN) FATAL TRAP: vec 2, NMI[0000] IN INTERRUPT CONTEXT", "xen_fatal_trap", Severity.FATAL),
    # Dasharo/dasharo-issues#488 (Xen 4.17.3-pre, debug build)
    (
        "(XEN) Assertion '!memchr_inv(b->ptr.buffer + MIN_BLOCK_SIZE, POISON_BYTE, (b->size & "
        "BLOCK_SIZE_MASK) - MIN_BLOCK_SIZE)' failed at common/xmalloc_tlsf.c:246",
        "xen_assert",
        Severity.FATAL,
    ),
    # osstest serial log quoted on xen-devel, Nov 2022 (osstest's own time prefix removed)
    ("(XEN) Domain 1 (vcpu#0) crashed on cpu#8:", "domain_crashed", Severity.WARNING),
    # linux-kernel, Rafael Aquini, vfree() soft lockup, 22 Jun 2021
    (
        "[  238.654842] watchdog: BUG: soft lockup - CPU#181 stuck for 26s! [rmmod:5203]",
        "linux_soft_lockup",
        Severity.ERROR,
    ),
    # kernel test robot report 202509081329.81f1ed82-lkp@intel.com (printk caller id)
    (
        "[  138.658008][   C24] watchdog: BUG: soft lockup - CPU#24 stuck for 23s! "
        "[pthread_mutex1_:6650]",
        "linux_soft_lockup",
        Severity.ERROR,
    ),
    # xen-devel, Linux 5.17.6 PV guest crash report
    (
        "[ 6.679020] general protection fault, maybe for address 0x8800: 0000 [#1] PREEMPT SMP "
        "NOPTI",
        "general_protection_fault",
        Severity.ERROR,
    ),
    # xen-devel, Linux 5.3.0-rc3 dom0, bfq crash (quoted-printable undone)
    (
        "[80915.716048] BUG: unable to handle page fault for address: 0000100000000008",
        "linux_bug",
        Severity.ERROR,
    ),
    # netdev, xen/netback fix, SLE12-SP5 dom0 oops
    ("[40072.537644] Oops: 0000 [#1] SMP NOPTI", "linux_oops", Severity.ERROR),
    # xen-devel, Juergen Gross, Xen PV RTC warning (quoted-printable undone)
    (
        "[    1.333404] WARNING: CPU: 1 PID: 1 at /home/gross/linux/head/drivers/rtc/"
        "rtc-mc146818-lib.c:25 mc146818_get_time+0x1be/0x210",
        "linux_warning",
        Severity.WARNING,
    ),
]


@pytest.mark.parametrize(("line", "kind", "severity"), REAL_LINES)
def test_real_lines_are_classified(line: str, kind: str, severity: Severity) -> None:
    event = classify(line)
    assert event is not None
    assert (event.kind, event.severity, event.line) == (kind, severity, line)


@pytest.mark.parametrize(
    "line",
    [
        # syzbot report: a user-space process's GP fault is not a kernel crash
        "traps: syz-executor229[3615] general protection fault ip:7feb96eb56a1 sp:20000fd0 "
        "error:0 in syz-executor2295634012[7feb96e75000+84000]",
        # Xen boot banner line (xen-devel, Xen on arm64 boot log)
        "(XEN) *** Serial input to DOM0 (type 'CTRL-a' three times to switch input)",
        # the harness's own com1 log: a marker line is not console output
        "2026-11-25T21:40:48.123Z # com1 disconnected: connection closed by the console server",
    ],
)
def test_ordinary_lines_are_not_events(line: str) -> None:
    assert classify(line) is None


def test_the_harness_log_prefix_is_understood() -> None:
    event = classify("2026-11-25T21:40:48.123Z | (XEN) Panic on CPU 0:")
    assert event is not None
    assert event.kind == "xen_panic"


def test_stop_at_fatal_ignores_the_oops_until_the_panic() -> None:
    text = console_text("linux-6.13-dom0-oops-xen-4.17.5.txt")
    lines = text.splitlines()
    panic = lines.index("[    9.408318] Kernel panic - not syncing: Fatal exception")

    watcher = watch(text, stop_at=Severity.FATAL)

    assert watcher.crash is not None
    assert watcher.crash.line == lines[panic]
    assert watcher.evidence.splitlines() == lines[panic - 40 :]


def test_warnings_are_recorded_but_do_not_stop() -> None:
    line = REAL_LINES[-1][0]
    watcher = watch(line + "\n")

    assert watcher.crash is None
    assert [e.kind for e in watcher.events] == ["linux_warning"]
    watcher.check()  # does not raise


def test_evidence_window_is_bounded_and_closes() -> None:
    text = console_text("xen-4.17.6-fatal-page-fault.txt")
    lines = text.splitlines()
    at = lines.index("(XEN) Xen call trace:")

    watcher = watch(text, lines_before=3, lines_after=2)

    assert watcher.evidence.splitlines() == lines[at - 3 : at + 3]
    assert watcher.evidence_complete
    # The panic came after the window closed: the call trace stays the crash.
    assert watcher.crash is not None
    assert watcher.crash.kind == "xen_call_trace"


def test_check_raises_with_event_and_evidence() -> None:
    watcher = watch(console_text("xen-4.14-watchdog-nmi-panic.txt"))

    with pytest.raises(ConsoleCrash) as info:
        watcher.check(source="host1")

    assert info.value.event == watcher.crash
    assert info.value.evidence == watcher.evidence
    message = str(info.value)
    assert message.startswith("host1: console shows xen_watchdog (FATAL): (XEN) Watchdog timer")
    assert "(XEN) Panic on CPU 1:" in message


def test_a_healthy_console_raises_nothing() -> None:
    healthy = console_text("xen-4.17.6-fatal-page-fault.txt").splitlines()[:30]
    watcher = watch("\n".join(healthy) + "\n")

    assert watcher.events == []
    assert watcher.crash is None
    watcher.check()


def test_an_endless_line_is_processed_in_bounded_pieces() -> None:
    watcher = ConsoleWatcher()
    watcher.feed("\0" * 100_000)
    watcher.feed("\n(XEN) Panic on CPU 0:\n")

    assert watcher.crash is not None
    assert watcher.crash.kind == "xen_panic"
    assert len(watcher._partial) == 0
