"""The boot strategy: off -> booted (Xen and dom0 seen on com1) -> ready (SSH).

A labgrid Strategy: `transition()` is the only way between states, and a failed
transition is remembered (`@never_retry`) until the host is recovered (`force()`).
It is declared in the lab file and bound by labgrid to the host's power (PowerProtocol),
com1 (Com1ConsoleDriver) and SSH (XenSSHDriver). Every stage of the boot is a named
wait from the timeout table, watched for crashes on com1, and kept in the boot timeline.

Whose fault a failed boot is depends on how far it got: nothing from Xen yet means the
lab is broken (BMC, console, firmware, bootloader); a crash or a stall after the Xen
banner is a product failure.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import attr
from labgrid.factory import target_factory
from labgrid.step import step
from labgrid.strategy import Strategy, StrategyError, never_retry

from .com1 import Com1Mark
from .com1_stream import Com1Timeout
from .console_watch import ConsoleCrash, ConsoleWatcher
from .errors import InfrastructureError, ProductFailure
from .remote import SSHUnavailable
from .timeouts import Timeouts

log = logging.getLogger(__name__)


class Status(enum.Enum):
    unknown = 0
    off = 1
    booted = 2  # dom0 login prompt seen on com1
    ready = 3  # SSH answers


class BootBroken(InfrastructureError):
    """The host did not get as far as Xen: a lab problem."""


class BootFailed(ProductFailure):
    """Xen or dom0 did not boot, or crashed while booting."""


@dataclass(frozen=True)
class Stage:
    """A boot stage: its name, what com1 shows when it is reached, its timeout name."""

    name: str
    pattern: str
    timeout: str
    xen_only: bool = False


STAGES = (
    Stage("firmware", r"[\x20-\x7e]", "firmware"),
    Stage("bootloader", r"GRUB|Booting `", "bootloader"),
    Stage("xen", r"Xen version (\S+) \(", "xen_banner", xen_only=True),
    # The space after the version: a match must not end where a read of com1 happened to.
    Stage("dom0 kernel", r"Linux version (\S+) ", "dom0_kernel"),
    Stage("login", r"login: ", "login_prompt"),
)


@dataclass
class BootTimeline:
    """Seconds since power-on at which each stage was seen; what the stages showed."""

    host: str
    started: float = field(default_factory=time.time)
    stages: list[tuple[str, float]] = field(default_factory=list)
    seen: dict[str, str] = field(default_factory=dict)

    def reached(self, stage: str) -> bool:
        return any(name == stage for name, _ in self.stages)

    def render(self) -> str:
        lines = [f"boot timeline of {self.host} (seconds after power-on)"]
        previous = 0.0
        for name, at in self.stages:
            lines.append(f"  {name:<12} {at:8.1f} s   (+{at - previous:.1f} s)")
            previous = at
        for name, value in self.seen.items():
            lines.append(f"  {name}: {value}")
        return "\n".join(lines) + "\n"


def cause_of(error: BaseException) -> BaseException:
    """What broke the strategy: labgrid wraps it in a StrategyError once per nested
    transition, and its kind (product failure or lab breakage) is what reports need."""
    while isinstance(error, StrategyError) and error.__cause__ is not None:
        error = error.__cause__
    return error


@target_factory.reg_driver
@attr.s(eq=False)
class XenBootStrategy(Strategy):
    """Power-cycles a host into the Xen build installed on it and waits until dom0
    answers SSH.

    Besides its bindings it is given, by whoever runs the host (harness.host.Host):
    `timeouts`, the host's scaled table, and `on_power_on()`, called just before each
    power-on (a new boot begins)."""

    bindings: ClassVar[dict[str, Any]] = {"power": "PowerProtocol",
                                          "console": "Com1ConsoleDriver",
                                          "shell": "XenSSHDriver"}
    status: Status = attr.ib(default=Status.unknown)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.timeouts = Timeouts()
        self.on_power_on: Callable[[], None] = lambda: None
        self.expect_xen = True
        self.timeline: BootTimeline | None = None
        self._power_on_at = 0.0  # monotonic time of the last power-on
        self.console_at_power_on: Com1Mark | None = None

    @never_retry
    @step(args=["status"])
    def transition(self, status: Status | str) -> None:
        if not isinstance(status, Status):
            status = Status[status]
        if status == self.status:
            return
        for driver in (self.power, self.console, self.shell):
            self.target.activate(driver)
        if status == Status.off:
            self.power.off()
        elif status == Status.booted:
            self._boot()
        elif status == Status.ready:
            if self.status != Status.booted:
                self.transition(Status.booted)
            self._wait_ssh()
        else:
            raise ValueError(f"cannot transition to {status}")
        self.status = status

    @step(args=["status"])
    def force(self, status: Status | str) -> None:
        """Take the host to be in `status` without acting (labgrid's way to tell a
        strategy the target's state); forgets a failed transition. Recovery forces
        `unknown`, so that the next transition starts with a power cycle."""
        self.broken = None
        self.status = status if isinstance(status, Status) else Status[status]

    def _boot(self) -> None:
        name, timeouts = self.target.name, self.timeouts
        timeline = BootTimeline(name)
        self.timeline = timeline
        self.on_power_on()
        watcher = ConsoleWatcher()
        with self.console.subscribe() as stream:
            self.console_at_power_on = self.console.mark()
            start = self._power_on_at = time.monotonic()
            self.power.cycle()
            timeline.started = time.time()
            for stage in STAGES:
                if stage.xen_only and not self.expect_xen:
                    continue
                try:
                    match = stream.expect([stage.pattern], timeouts[stage.timeout],
                                          watcher=watcher,
                                          dump_wait=timeouts["console_crash_dump"])
                except ConsoleCrash as crash:
                    raise BootFailed(f"{name}: crashed during boot, before stage "
                                     f"'{stage.name}': {crash}") from crash
                except Com1Timeout as timeout:
                    problem = (f"{name}: boot stage '{stage.name}' not reached: "
                               f"{timeout}")
                    # Anything after Xen's banner is Xen's or dom0's doing.
                    if timeline.reached("xen") or (not self.expect_xen
                                                   and timeline.reached("bootloader")):
                        raise BootFailed(problem) from timeout
                    raise BootBroken(problem) from timeout
                timeline.stages.append((stage.name, time.monotonic() - start))
                if match.groups():
                    timeline.seen[stage.name] = match.group(1)
                log.info("%s: %s after %.1f s", name, stage.name, time.monotonic() - start)

    def _wait_ssh(self) -> None:
        try:
            self.shell.wait_ready(self.timeouts["ssh_after_power_cycle"])
        except SSHUnavailable as error:
            if self.timeline is not None and self.timeline.reached("xen"):
                raise BootFailed(f"{self.target.name}: dom0 booted but SSH never answered: "
                                 f"{error}") from error
            raise
        if self.timeline is not None:
            since_power_on = time.monotonic() - self._power_on_at
            self.timeline.stages.append(("ssh", since_power_on))
            log.info("%s: SSH ready after %.1f s", self.target.name, since_power_on)
