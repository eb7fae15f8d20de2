"""The boot strategy: off -> booted (Xen and dom0 seen on com1) -> ready (SSH).

A labgrid Strategy: `transition()` is the only way between states, and a failed
transition is remembered (`@never_retry`) until the host is recovered. Every stage of
the boot is a named wait from the timeout table, watched for crashes on com1, and kept
in the boot timeline.

Whose fault a failed boot is depends on how far it got: nothing from Xen yet means the
lab is broken (BMC, console, firmware, bootloader); a crash or a stall after the Xen
banner is a product failure.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import attr
from labgrid.factory import target_factory
from labgrid.step import step
from labgrid.strategy import Strategy, never_retry

from .com1 import Com1Mark, Com1Timeout
from .console_watch import ConsoleCrash, ConsoleWatcher
from .errors import InfrastructureError, ProductFailure
from .remote import SSHUnavailable

if TYPE_CHECKING:
    from .host import Host

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
    Stage("dom0 kernel", r"Linux version (\S+)", "dom0_kernel"),
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


@target_factory.reg_driver
@attr.s(eq=False)
class XenBootStrategy(Strategy):
    """Power-cycles a host into the Xen build installed on it and waits until dom0
    answers SSH. `host` (harness.host.Host) gives it com1, SSH and the timeouts."""

    bindings: ClassVar[dict[str, Any]] = {"power": "PowerProtocol"}
    status: Status = attr.ib(default=Status.unknown)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.host: Host | None = None
        self.expect_xen = True
        self.timeline: BootTimeline | None = None
        self._power_on_at = 0.0  # monotonic time of the last power-on
        self.console_at_power_on: Com1Mark | None = None

    def _host(self) -> Host:
        assert self.host is not None, "XenBootStrategy.host is not set"
        return self.host

    @never_retry
    @step(args=["status"])
    def transition(self, status: Status | str) -> None:
        if not isinstance(status, Status):
            status = Status[status]
        if status == self.status:
            return
        # Silence and power off are expected from here until the host is ready again.
        self._host().liveness.disarm()
        self.target.activate(self.power)
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

    def recover(self) -> None:
        """Forget a failed transition: the next one starts with a power cycle."""
        self.broken = None
        self.status = Status.unknown

    def _boot(self) -> None:
        host = self._host()
        timeouts = host.timeouts
        timeline = BootTimeline(host.name)
        self.timeline = timeline
        host.new_boot()
        watcher = ConsoleWatcher()
        with host.com1.subscribe() as stream:
            self.console_at_power_on = host.com1.mark()
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
                    raise BootFailed(f"{host.name}: crashed during boot, before stage "
                                     f"'{stage.name}': {crash}") from crash
                except Com1Timeout as timeout:
                    problem = (f"{host.name}: boot stage '{stage.name}' not reached: "
                               f"{timeout}")
                    # Anything after Xen's banner is Xen's or dom0's doing.
                    if timeline.reached("xen") or (not self.expect_xen
                                                   and timeline.reached("bootloader")):
                        raise BootFailed(problem) from timeout
                    raise BootBroken(problem) from timeout
                timeline.stages.append((stage.name, time.monotonic() - start))
                if match.groups():
                    timeline.seen[stage.name] = match.group(1)
                log.info("%s: %s after %.1f s", host.name, stage.name,
                         time.monotonic() - start)

    def _wait_ssh(self) -> None:
        host = self._host()
        try:
            host.remote.wait_ready(host.timeouts["ssh_after_power_cycle"])
        except SSHUnavailable as error:
            if self.timeline is not None and self.timeline.reached("xen"):
                raise BootFailed(f"{host.name}: dom0 booted but SSH never answered: "
                                 f"{error}") from error
            raise
        if self.timeline is not None:
            since_power_on = time.monotonic() - self._power_on_at
            self.timeline.stages.append(("ssh", since_power_on))
            log.info("%s: SSH ready after %.1f s", host.name, since_power_on)
