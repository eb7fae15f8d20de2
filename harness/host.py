"""A lab host as scenarios see it: power, com1, SSH, and the Xen build on it.

The labgrid target (from the lab file) gives the power driver; the host adds the com1
recorder that runs for the whole session, an SSH connection whose every command lands
in the current test's transcript, and the boot strategy.

Its `health` is what every operation on it obeys: the com1 watcher (a crash) and the
liveness monitor (a hang, an unasked power off, a dead BMC) record faults there, and
a fault closes the SSH connection, so whatever a test was doing on the host ends at
once with the fault as its reason.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from labgrid import Target
from labgrid.strategy import StrategyError

from . import evidence
from .build import XenBuild
from .com1 import Com1Recorder, Com1Stream
from .console_watch import ConsoleCrash, ConsoleWatcher, Severity
from .errors import ProductFailure
from .health import HostBroken, HostHealth
from .install import install_build, installed_entry
from .ipmi import BMCError, bmc_secrets
from .lab import HostSpec, Lab
from .liveness import LivenessMonitor, ssh_banner
from .remote import CommandResult, RemoteHost, SSHUnavailable, Transcript
from .strategy import BootTimeline, Status, XenBootStrategy, cause_of
from .xl import parse_xl_info

log = logging.getLogger(__name__)

# osstest's dump: Ctrl-A three times switches the serial input from dom0 to Xen.
XEN_INPUT_SWITCH = b"\x01\x01\x01"
XEN_DEBUG_KEYS = "0HMQacdegimnrstuvz"


# What the harness leaves running on a host while it works is named so that a run
# that was killed can be cleaned up after: guests `xenhil-*`, background processes
# with a pid file /run/xenhil-*.pid (downtime probes, NBD servers).
CLEAR_LEFTOVERS = (
    "for d in $(xl list 2>/dev/null | awk 'NR > 1 && $1 ~ /^xenhil-/ {print $1}'); do "
    "echo \"guest $d\"; xl destroy \"$d\"; done; "
    "for f in /run/xenhil-*.pid; do [ -e \"$f\" ] || continue; echo \"process $(cat \"$f\")\"; "
    "kill $(cat \"$f\") 2>/dev/null; rm -f \"$f\"; done; true")


class WrongXenBooted(ProductFailure):
    """The host booted, but not the Xen version of the build under test."""


@dataclass(frozen=True)
class BootedXen:
    """What a boot into a build showed: versions from com1 and from `xl info`."""

    build: XenBuild
    console_version: str
    xl_info: dict[str, str]
    timeline: BootTimeline

    @property
    def xen_version(self) -> str:
        return self.xl_info.get("xen_version", "")

    @property
    def dom0_kernel(self) -> str:
        return self.xl_info.get("release", "")


class InstalledDisks(Protocol):
    """Disks of a virtual lab's hosts with a build installed, kept to be booted again
    instead of installing it (harness.vlab.installed). A real lab has none."""

    # Run on the host before its disk is copied to be kept: what must not be shared.
    before_keeping: str

    def kept(self, host: str, build: XenBuild) -> Path | None: ...

    def restore(self, host: str, build: XenBuild) -> Path: ...

    def stage(self, host: str) -> bool: ...

    def keep_staged(self, host: str, build: XenBuild) -> Path | None: ...


class Host:
    def __init__(self, lab: Lab, spec: HostSpec, target: Target, com1_log: Path) -> None:
        self.lab = lab
        self.spec = spec
        self.name = spec.name
        self.target = target
        self.timeouts = lab.timeouts(spec)
        self.com1 = Com1Recorder(spec.console, com1_log, name=spec.name)
        self.transcripts: list[Transcript] = []
        self.health = HostHealth(spec.name)
        self.remote = RemoteHost(spec.name, spec.ssh, on_command=self._record,
                                 secrets=bmc_secrets(spec.bmc), health=self.health)
        self.health.on_fault(self.remote.close)
        # Fed continuously from com1 by a thread of its own, so that any wait of any
        # test fails at once when the host crashes. Replaced at every power-on.
        self.watcher = ConsoleWatcher()
        self._watch_lock = threading.Lock()
        self._watch_thread: threading.Thread | None = None
        self._watch_stop = threading.Event()
        self._dumping = False  # our own debug-key dump prints call traces: not a crash
        self.left_off = False  # powered off on purpose; the next test powers it back on
        self.power = target.get_driver("PowerProtocol")
        if hasattr(self.power, "state_timeout"):  # ours: the table's wait, scaled for this host
            self.power.state_timeout = self.timeouts["bmc_power_state"]
        self.liveness = LivenessMonitor(
            spec.name, self.health,
            ssh_answers=lambda: ssh_banner(spec.ssh.address, spec.ssh.port),
            powered_on=self.power.poll,
            console_bytes=lambda: self.com1.bytes_received,
            hang_timeout=self.timeouts["host_hang"])
        # labgrid's shell of the host is its SSH connection (with its health, transcripts)
        target.get_driver("XenSSHDriver", activate=False).use(self.remote)
        self.strategy: XenBootStrategy = target.get_driver("XenBootStrategy", activate=False)
        self.installed_disks: InstalledDisks | None = None
        self.strategy.timeouts = self.timeouts
        self.strategy.on_power_on = self.new_boot
        self.booted: BootedXen | None = None

    @property
    def needs_recovery(self) -> bool:
        """An earlier boot or test left the host crashed, hung, powered off or its
        strategy broken."""
        return (self.left_off or self.strategy.broken is not None
                or self.watcher.crash is not None or self.health.current is not None)

    def _record(self, result: CommandResult) -> None:
        for transcript in self.transcripts:
            transcript.add(result)

    def start(self) -> None:
        """Start recording and watching com1; before anything powers the host on."""
        self.com1.start()
        stream = self.com1.subscribe()
        self._watch_thread = threading.Thread(target=self._watch, args=(stream,),
                                              name=f"com1-watch-{self.name}", daemon=True)
        self._watch_thread.start()
        self.liveness.start()

    def _watch(self, stream: Com1Stream) -> None:
        with stream:
            while not self._watch_stop.is_set():
                try:
                    data = stream.read(timeout=0.5)
                except EOFError:
                    return
                if not data:
                    continue
                with self._watch_lock:
                    self.watcher.feed(data)
                    crash = self.watcher.crash
                    ours = self._dumping and crash is not None \
                        and crash.severity < Severity.FATAL
                if crash is not None and not ours:
                    self.health.fault(ConsoleCrash(crash, self.watcher.evidence, self.name))

    def new_boot(self) -> None:
        """Power-on: what the console showed before belongs to the previous boot."""
        with self._watch_lock:
            self.watcher = ConsoleWatcher()
        self.health.clear()
        self.left_off = False

    def check_console(self) -> None:
        """Raise the host's fault (a crash on com1, a hang) if it has one."""
        with self._watch_lock:
            self.watcher.check(self.name)
        self.health.check()

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float,
                 interval: float = 1.0) -> float:
        """Poll `condition` until true; fail at once if the host crashes or hangs
        meanwhile. Returns the seconds it took."""
        start = time.monotonic()
        while True:
            self.check_console()
            if condition():
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{self.name}: {what} not within {timeout:.0f} s")
            self.health.sleep(interval)

    def sleep(self, seconds: float) -> None:
        """A pause in a procedure on this host; a fault of the host ends it at once."""
        self.health.sleep(seconds)

    def close(self) -> None:
        self._watch_stop.set()
        self.liveness.stop()
        self.remote.close()
        self.com1.stop()
        if self._watch_thread is not None:
            self._watch_thread.join(timeout=5)

    def run(self, command: str, *, timeout: float | None = None,
            check: bool = True) -> CommandResult:
        return self.remote.run(command, check=check,
                               timeout=timeout or self.timeouts["command"])

    def power_cycle_to_shell(self, *, expect_xen: bool) -> BootTimeline:
        """Power cycle and wait for SSH; with expect_xen the Xen banner must show.
        A BMC that cannot do it makes the host BROKEN for the rest of the run."""
        self.check_not_broken()
        self.liveness.disarm()
        self.remote.close()  # the connection cannot survive the power cycle
        self.strategy.force(Status.unknown)  # the next transition starts with a power cycle
        self.strategy.expect_xen = expect_xen
        try:
            self.strategy.transition(Status.ready)
        except StrategyError as error:
            cause = cause_of(error)
            if isinstance(cause, BMCError):
                self.health.fault(HostBroken(f"{self.name}: cannot be power cycled back: "
                                             f"{cause}"))
                self.check_not_broken()
            raise cause from None
        self.liveness.arm()
        assert self.strategy.timeline is not None
        return self.strategy.timeline

    def power_off(self) -> None:
        """Power the host off through its BMC, on purpose (nobody will call it hung)."""
        self.liveness.disarm()
        self.remote.close()
        self.strategy.transition(Status.off)
        self.left_off = True

    def check_not_broken(self) -> None:
        """Raise HostBroken if the lab can no longer bring this host back."""
        broken = self.health.broken
        if broken is not None:
            raise broken.with_traceback(None)

    def boot_build(self, build: XenBuild) -> BootedXen:
        """Install `build` (booting the host first if needed), power cycle into it and
        check that its Xen version is the one running. On the virtual lab, a disk kept
        with the build installed replaces the install, and a disk just installed is
        kept once its boot is verified."""
        disks = self.installed_disks
        kept = disks.kept(self.name, build) if disks is not None else None
        staged = False
        if disks is not None and kept is not None:
            with evidence.step(f"boot {build.label} on {self.name} from its kept disk"):
                self.power_off()
                disks.restore(self.name, build)
        else:
            self.ensure_shell()
            with evidence.step(f"install {build.label} on {self.name}"):
                _, installed = install_build(self.remote, self.spec, build,
                                             self.timeouts["package_install"])
            if disks is not None and installed:
                self.run(disks.before_keeping)
                self.power_off()
                staged = self._stage_disk(disks)
        timeline = self.power_cycle_to_shell(expect_xen=True)
        if kept is not None:
            timeline.seen["disk"] = f"kept disk {kept.name}, {build.label} not installed again"
        console_version = timeline.seen.get("xen", "")
        info = parse_xl_info(self.run("xl info").stdout)
        booted = BootedXen(build, console_version, info, timeline)
        expected = build.xen_version
        if not booted.xen_version.startswith(expected) \
                or not console_version.startswith(expected):
            raise WrongXenBooted(
                f"{self.name}: expected Xen {expected} from {build.label}, but com1 shows "
                f"{console_version or 'no banner'} and xl info shows "
                f"{booted.xen_version or 'nothing'}")
        self.booted = booted
        log.info("%s: Xen %s booted (%s), dom0 kernel %s", self.name, booted.xen_version,
                 build.label, booted.dom0_kernel)
        if disks is not None and staged:
            try:
                disks.keep_staged(self.name, build)
            except OSError as error:  # a disk not kept costs the next run an install
                log.warning("%s: its installed disk was not kept: %s", self.name, error)
        return booted

    def _stage_disk(self, disks: InstalledDisks) -> bool:
        try:
            return disks.stage(self.name)
        except (OSError, subprocess.SubprocessError) as error:
            log.warning("%s: its installed disk was not copied to be kept: %s", self.name,
                        error)
            return False

    def adopt_running_build(self, build: XenBuild, why: str | None = None) -> BootedXen | None:
        """Take the host as it is if it already runs `build` (installed exactly, its Xen
        version running); None otherwise. No power cycle: for iterating on scenarios, or
        a host an earlier session of the run booted (`why` goes into its timeline)."""
        try:
            self.remote.wait_ready(timeout=5, interval=1)
        except SSHUnavailable:
            return None
        if installed_entry(self.remote, self.spec, build) is None:
            return None
        info = parse_xl_info(self.run("xl info", check=False).stdout)
        if not info.get("xen_version", "").startswith(build.xen_version):
            return None
        left = self.run(CLEAR_LEFTOVERS, check=False).stdout.split("\n")
        if any(left):
            log.warning("%s: stopped what an earlier run left: %s", self.name,
                        ", ".join(line for line in left if line))
        timeline = BootTimeline(self.name)
        timeline.seen["reused"] = why or "already running the build; not power cycled this session"
        self.booted = BootedXen(build, info["xen_version"], info, timeline)
        self.liveness.arm()
        log.info("%s: already runs Xen %s of %s: reused without a power cycle", self.name,
                 info["xen_version"], build.label)
        return self.booted

    def ensure_shell(self) -> None:
        """SSH must answer; a host that does not is power cycled into whatever it has."""
        self.check_not_broken()
        try:
            self.remote.wait_ready(timeout=5, interval=1)
        except SSHUnavailable:
            log.info("%s: no SSH; power cycling it into its default boot entry", self.name)
            self.power_cycle_to_shell(expect_xen=False)
        self.liveness.arm()

    def boot_console(self) -> str:
        """com1 from the last power-on until now (the whole boot, timestamped)."""
        mark = self.strategy.console_at_power_on
        return self.com1.text_since(mark) if mark is not None else ""

    def dump_xen_state(self) -> None:
        """Xen's state dump on com1 (debug keys), waited for until com1 is quiet.

        The dump prints register and stack dumps ("Xen call trace:") that the watcher
        would take for a crash, and the next test would power cycle a healthy host.
        So a watcher that had seen nothing fatal starts over after the dump; only a
        fatal event (a panic, a crashed dom0) during the dump is kept."""
        if not self.com1.connected:
            return
        with self._watch_lock:
            crashed_before = self.watcher.crash is not None
            self._dumping = True
        try:
            self.send_xen_debug_keys()
            limit, quiet = time.monotonic() + self.timeouts["debug_keys"], 2.0
            received = self.com1.bytes_received
            while time.monotonic() < limit:
                time.sleep(quiet)
                if self.com1.bytes_received == received:
                    break
                received = self.com1.bytes_received
        finally:
            with self._watch_lock:
                self._dumping = False
                crash = self.watcher.crash
                if not crashed_before and (crash is None or crash.severity < Severity.FATAL):
                    self.watcher = ConsoleWatcher()

    def send_xen_debug_keys(self, keys: str = XEN_DEBUG_KEYS) -> None:
        """Make Xen dump its state to com1 (osstest does this before fetching logs)."""
        if not self.com1.connected:
            return
        self.com1.write(XEN_INPUT_SWITCH)
        for key in keys:
            self.com1.write(key.encode())
            time.sleep(0.2)
        self.com1.write(XEN_INPUT_SWITCH)
