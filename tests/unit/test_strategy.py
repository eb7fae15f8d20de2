"""XenBootStrategy on a labgrid target: whose fault a failed boot is, by how far it got.

The console is a local TCP server fed with slices of a real Xen 4.17.7 boot recorded on
com1 of the virtual lab; power is a labgrid PowerProtocol driver that "powers on" by
making that server send them. Nothing from Xen yet: BROKEN (the lab); a stall or a
crash after the Xen banner, or SSH never answering after it: FAILED (the product).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import attr
import pytest
from labgrid import Target
from labgrid.driver.common import Driver
from labgrid.protocol import PowerProtocol
from labgrid.resource import NetworkService
from labgrid.strategy import StrategyError

from harness.com1 import Com1Recorder
from harness.console_transport import RawTCPPort
from harness.drivers.com1console import Com1ConsoleDriver, Com1Port
from harness.drivers.xenssh import XenSSHDriver
from harness.remote import SSHUnavailable
from harness.strategy import BootBroken, BootFailed, Status, XenBootStrategy, cause_of
from harness.timeouts import Timeouts
from tests.unit.test_com1 import ConsoleServer, wait_for
from tests.unit.test_console_watch import console_text

BOOT = (Path(__file__).parent.parent / "data" / "boot" / "com1-xen-4.17.7-boot.raw").read_bytes()
UP_TO_GRUB = BOOT[:BOOT.index(b"Xen version")]
UP_TO_XEN = BOOT[:BOOT.index(b"Linux version")]
# Every stage wait in seconds: firmware 60 s x 0.03 = 1.8 s, login 300 s x 0.03 = 9 s.
FAST = Timeouts(factor=0.03)


@attr.s(eq=False)
class ScriptedPower(Driver, PowerProtocol):
    """Power on = the console server sends `console` (what this boot shows on com1),
    a piece every half second."""

    bindings: ClassVar[dict[str, Any]] = {}
    console: tuple[bytes, ...] = ()
    server: ConsoleServer | None = None
    powered = False

    def on(self) -> None:
        self.powered = True
        assert self.server is not None
        for number, piece in enumerate(self.console):
            self.server.send_later(0.1 + 0.5 * number, piece)

    def off(self) -> None:
        self.powered = False

    def cycle(self) -> None:
        self.off()
        self.on()

    def get(self) -> bool:
        return self.powered


@pytest.fixture
def server() -> Iterator[ConsoleServer]:
    server = ConsoleServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def target(server: ConsoleServer, tmp_path: Path) -> Iterator[Target]:
    target = Target("host1")
    Com1Port(target, "com1", host="127.0.0.1", port=server.port)
    with Com1Recorder(RawTCPPort("127.0.0.1", server.port), tmp_path / "com1.log",
                      name="host1") as com1:
        server.wait_client()
        wait_for(lambda: com1.connected, "the recorder to connect")
        ScriptedPower(target, "power").server = server
        Com1ConsoleDriver(target, "console")
        NetworkService(target, "ssh", address="127.0.0.1", username="root")
        XenSSHDriver(target, "shell").use(FakeSSH())  # type: ignore[arg-type]
        yield target
        target.cleanup()


class FakeSSH:
    """SSH of the host under boot: it answers once the console showed a login prompt
    (as dom0's sshd does), unless told it never does."""

    answers = True

    def wait_ready(self, timeout: float) -> float:
        if not self.answers:
            raise SSHUnavailable(f"host1: SSH not ready within {timeout:.0f} s")
        return 0.0


def strategy_of(target: Target, *console: bytes, ssh: str = "answers") -> XenBootStrategy:
    target.get_driver(ScriptedPower, activate=False).console = console
    fake = target.get_driver(XenSSHDriver, activate=False).remote
    fake.answers = ssh == "answers"
    strategy = XenBootStrategy(target, "boot")  # type: ignore[call-arg]
    strategy.timeouts = FAST
    return strategy


def failure_of(strategy: XenBootStrategy) -> BaseException:
    with pytest.raises(StrategyError) as raised:
        strategy.transition(Status.ready)
    return cause_of(raised.value)


def test_full_boot_reaches_ready_with_every_stage_in_order(target: Target) -> None:
    strategy = strategy_of(target, BOOT)
    strategy.transition(Status.ready)
    assert strategy.status == Status.ready
    assert strategy.timeline is not None
    stages = [name for name, _ in strategy.timeline.stages]
    assert stages == ["firmware", "bootloader", "xen", "dom0 kernel", "login", "ssh"]
    seconds = [at for _, at in strategy.timeline.stages]
    assert seconds == sorted(seconds)
    assert strategy.timeline.seen["xen"] == "4.17.7"


def test_version_split_across_console_reads_is_seen_whole(target: Target) -> None:
    kernel = BOOT.index(b"Linux version") + len(b"Linux version 6.")
    strategy = strategy_of(target, BOOT[:kernel], BOOT[kernel:])  # arrives half a second apart
    strategy.transition(Status.ready)
    assert strategy.timeline is not None
    assert strategy.timeline.seen["dom0 kernel"] == "6.1.0-50-amd64"


def test_silent_console_is_lab_breakage(target: Target) -> None:
    failure = failure_of(strategy_of(target))
    assert isinstance(failure, BootBroken)
    assert "boot stage 'firmware' not reached" in str(failure)


def test_no_xen_after_the_bootloader_is_lab_breakage(target: Target) -> None:
    failure = failure_of(strategy_of(target, UP_TO_GRUB))
    assert isinstance(failure, BootBroken)
    assert "boot stage 'xen' not reached" in str(failure)


def test_stall_after_the_xen_banner_is_a_product_failure(target: Target) -> None:
    failure = failure_of(strategy_of(target, UP_TO_XEN))
    assert isinstance(failure, BootFailed)
    assert "boot stage 'dom0 kernel' not reached" in str(failure)


def test_xen_panic_during_boot_is_a_product_failure(target: Target) -> None:
    panic = console_text("xen-4.17.6-fatal-page-fault.txt").encode()
    failure = failure_of(strategy_of(target, UP_TO_XEN, panic))
    assert isinstance(failure, BootFailed)
    assert "crashed during boot, before stage 'dom0 kernel'" in str(failure)
    assert "FATAL PAGE FAULT" in str(failure)


def test_dom0_that_never_answers_ssh_is_a_product_failure(target: Target) -> None:
    failure = failure_of(strategy_of(target, BOOT, ssh="never"))
    assert isinstance(failure, BootFailed)
    assert "dom0 booted but SSH never answered" in str(failure)


def test_failed_transition_is_remembered_until_forced(target: Target) -> None:
    strategy = strategy_of(target)
    failure_of(strategy)
    with pytest.raises(StrategyError, match="broken state"):
        strategy.transition(Status.ready)  # not retried: the same failure
    target.get_driver(ScriptedPower, activate=False).console = (BOOT,)
    strategy.force(Status.unknown)  # recovery: a power cycle is the next step
    strategy.transition(Status.ready)
    assert strategy.status == Status.ready
