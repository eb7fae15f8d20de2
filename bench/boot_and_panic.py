"""Benchmark: the harness's boot path against bare QEMU, and how fast a dom0 panic ends
the harness call it happened in (issue 16, item 4). Nothing here asserts a figure.

On the virtual lab's vlab1, with the lab's default build (Debian's Xen 4.17.7) installed
once, it prints:
1. boot to SSH, interleaved harness, bare, harness, bare, ... (--rounds of each, each
   printed as it ends): "harness" is IPMI power-on to SSH ready through
   Host.power_cycle_to_shell (BMC, com1 recorder, console watcher, boot strategy);
   "bare" is the same QEMU command line without the BMC's devices, on the same disk,
   started directly and timed to sshd's banner. Then both medians and their ratio,
   beside the goal (at most 1.10).
2. panic latency (--panics times): dom0 crashed by `echo c > /proc/sysrq-trigger` run
   through Host.run; from the panic line's timestamp in the com1 log to the moment that
   call raises ConsoleCrash, beside the goal (at most 2 s). Each crash is followed by a
   power cycle back into Xen.

It starts the virtual lab itself (refused while the lab is up, e.g. for a run) and stops
it at the end whatever happens. Needs root and the lab's images (`make vlab-build`);
com1 logs and the bare boots' console and QEMU output go to
reports/bench-boot-and-panic-<time>/. Exits 0 when everything was measured, 2 when
the bench could not measure (the reason printed: a lab or boot error, a refused lab).

    .venv/bin/python bench/boot_and_panic.py [--rounds N] [--panics N]   (make bench)
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from types import FrameType

from harness.build import load_build
from harness.console_watch import ConsoleCrash, Severity, classify
from harness.errors import HarnessError
from harness.host import Host
from harness.lab import DEFAULT_LAB, Lab, load_lab
from harness.liveness import ssh_banner
from harness.paths import cache_dir, expand
from harness.strategy import STAGES, BootTimeline
from harness.targets import lab_environment
from harness.vlab import control
from harness.vlab.builds import fetch_builds
from harness.vlab.image import build_image
from harness.vlab.machine import VirtualHost

HOST = "vlab1"
BOOT_RATIO_GOAL = 1.10
PANIC_GOAL = 2.0  # s
CRASH_DOM0 = "echo c > /proc/sysrq-trigger"
BANNER_PROBE = 2.0  # s one probe of the bare machine's sshd may take
BANNER_POLL = 0.5  # s between two probes
PORTS_FREE_TIMEOUT = 30.0  # s for a stopped QEMU's listening sockets to go
XEN_BANNER = re.compile(next(stage.pattern for stage in STAGES if stage.name == "xen"))
# A console line of a com1 .log (harness/com1.py); marker lines have "#" instead of "|".
_CONSOLE_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z) \| ")


class BenchError(HarnessError):
    """The bench could not measure what it set out to."""


# -- the pure pieces -----------------------------------------------------------------------


def _qemu_option(value: str) -> tuple[str, dict[str, str]]:
    """A -device or -chardev value: its driver (backend) and its properties."""
    driver, *pairs = value.split(",")
    return driver, {key: setting for key, _, setting in (pair.partition("=") for pair in pairs)}


def bare_qemu_argv(argv: Sequence[str]) -> list[str]:
    """A virtual host's QEMU command line (VirtualHost.qemu_argv) without its BMC: the
    ipmi-bmc-extern device, the chardev it reaches the BMC through, and the IPMI
    interface the guest sees on top of it. Everything else stays, in order."""
    externs = [_qemu_option(value)[1] for option, value in pairwise(argv)
               if option == "-device" and _qemu_option(value)[0] == "ipmi-bmc-extern"]
    if not externs:
        raise ValueError("no ipmi-bmc-extern device in the QEMU command line")
    chardevs = {extern.get("chardev") for extern in externs}
    bmcs = {extern.get("id") for extern in externs}

    def needs_bmc(option: str, value: str) -> bool:
        driver, properties = _qemu_option(value)
        if option == "-chardev":
            return properties.get("id") in chardevs
        return driver == "ipmi-bmc-extern" or properties.get("bmc") in bmcs

    bare: list[str] = []
    index = 0
    while index < len(argv):
        option = argv[index]
        if option in ("-chardev", "-device") and index + 1 < len(argv) \
                and needs_bmc(option, argv[index + 1]):
            index += 2
            continue
        bare.append(option)
        index += 1
    return bare


def crash_line_time(com1_log: str, stop_at: Severity = Severity.ERROR) -> tuple[float, str]:
    """When the first console line that stops the harness's console watcher (a crash of
    `stop_at` or worse) arrived, from a com1 .log's UTC timestamps; and that line."""
    for line in com1_log.splitlines():
        stamp = _CONSOLE_LINE.match(line)
        event = classify(line) if stamp else None
        if stamp and event is not None and event.severity >= stop_at:
            arrived = datetime.strptime(stamp.group(1), "%Y-%m-%dT%H:%M:%S.%fZ")
            return arrived.replace(tzinfo=UTC).timestamp(), line
    raise ValueError(f"no console line of severity {stop_at.name} or worse in the com1 log")


def xen_version_on_console(console: bytes) -> str | None:
    """The version in Xen's banner on com1 (as the boot strategy reads it), if it shows."""
    match = XEN_BANNER.search(console.decode(errors="replace"))
    return match.group(1) if match else None


def _goal(met: bool) -> str:
    return "met" if met else "NOT met"


@dataclass(frozen=True)
class BootComparison:
    """Seconds from power-on to SSH, through the harness and bare, one per round."""

    harness: tuple[float, ...]
    bare: tuple[float, ...]

    @property
    def harness_median(self) -> float:
        return statistics.median(self.harness)

    @property
    def bare_median(self) -> float:
        return statistics.median(self.bare)

    @property
    def ratio(self) -> float:
        return self.harness_median / self.bare_median

    def render(self) -> str:
        return (f"boot to SSH, medians of {len(self.harness)} harness and {len(self.bare)} "
                f"bare rounds: harness {self.harness_median:.1f} s, bare QEMU "
                f"{self.bare_median:.1f} s; ratio {self.ratio:.3f} (goal: at most "
                f"{BOOT_RATIO_GOAL:.2f}, {_goal(self.ratio <= BOOT_RATIO_GOAL)})")


@dataclass(frozen=True)
class PanicLatencies:
    """Seconds from each panic line on com1 to the harness call's crash error."""

    seconds: tuple[float, ...]

    @property
    def worst(self) -> float:
        return max(self.seconds)

    def render(self) -> str:
        each = ", ".join(f"{latency:.3f} s" for latency in self.seconds)
        return (f"panic line on com1 -> crash error, {len(self.seconds)} panics: {each}; "
                f"worst {self.worst:.3f} s (goal: at most {PANIC_GOAL:.0f} s, "
                f"{_goal(self.worst <= PANIC_GOAL)})")


# -- the bare machine ----------------------------------------------------------------------


class ConsoleDrain:
    """The bare machine's com1 client, writing what it reads to a file: with wait=on
    QEMU starts the machine only once a client is connected, and the bytes show which
    Xen booted. Connects as soon as the port listens; ends when QEMU closes it."""

    def __init__(self, address: tuple[str, int], path: Path) -> None:
        self.address = address
        self.path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bare-com1", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        with open(self.path, "wb") as out:
            while not self._stop.is_set():
                try:
                    sock = socket.create_connection(self.address, timeout=1.0)
                except OSError:
                    self._stop.wait(0.05)
                    continue
                with sock:
                    sock.settimeout(0.5)
                    while not self._stop.is_set():
                        try:
                            data = sock.recv(65536)
                        except TimeoutError:
                            continue
                        except OSError:
                            return
                        if not data:
                            return
                        out.write(data)
                        out.flush()


def _wait_ports_free(vm: VirtualHost) -> None:
    """The machine's console and SSH ports are free (the last QEMU is gone)."""
    ssh = vm.spec.ssh
    ports = [vm.com1_server, (ssh.address, ssh.port)]
    deadline = time.monotonic() + PORTS_FREE_TIMEOUT
    while any(control.port_in_use(address, port, "tcp") for address, port in ports):
        if time.monotonic() > deadline:
            raise BenchError(f"{vm.name}: {ports} still in use {PORTS_FREE_TIMEOUT:.0f} s "
                             "after its QEMU was stopped")
        time.sleep(0.2)


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def bare_boot(vm: VirtualHost, out: Path, label: str, timeout: float) -> tuple[float, str]:
    """Start the machine's QEMU without its BMC; seconds until sshd's banner, and the
    Xen version com1 showed. QEMU is stopped afterwards, whatever happened."""
    _wait_ports_free(vm)
    ssh = vm.spec.ssh
    console, qemu_log = out / f"{label}-com1.raw", out / f"{label}-qemu.log"
    with open(qemu_log, "wb") as qemu_output:
        started = time.monotonic()
        qemu = subprocess.Popen(bare_qemu_argv(vm.qemu_argv()), stdin=subprocess.DEVNULL,
                                stdout=qemu_output, stderr=subprocess.STDOUT,
                                start_new_session=True)  # a Ctrl-C is the bench's to handle
    # Where the lab keeps its machine's PID: `xenhil vlab down` stops it if we are killed.
    vm.qemu_pid_file.write_text(f"{qemu.pid}\n")
    drain = ConsoleDrain(vm.com1_server, console)
    try:
        drain.start()
        while not ssh_banner(ssh.address, ssh.port, timeout=BANNER_PROBE):
            if qemu.poll() is not None:
                raise BenchError(f"bare QEMU exited with {qemu.returncode}; see {qemu_log}")
            if time.monotonic() - started > timeout:
                raise BenchError(f"bare QEMU: no SSH banner on {ssh.address}:{ssh.port} "
                                 f"within {timeout:.0f} s; console in {console}")
            time.sleep(BANNER_POLL)
        took = time.monotonic() - started
    finally:
        _stop_process(qemu)
        vm.qemu_pid_file.unlink(missing_ok=True)
        drain.stop()
    return took, xen_version_on_console(console.read_bytes()) or "no Xen banner"


# -- the harness ---------------------------------------------------------------------------


@contextlib.contextmanager
def harness_host(lab: Lab, com1_log: Path) -> Iterator[Host]:
    """The host as a run makes it (labgrid target, com1 recorder and watcher, liveness
    monitor, boot strategy), for one part of the bench. Not one for the whole bench: a
    bare boot needs com1 to itself, and the recorder would take it."""
    with lab_environment(lab) as environment:
        target = environment.get_target(HOST)
        if target is None:
            raise BenchError(f"{lab.path}: no labgrid target {HOST}")
        host = Host(lab, lab.host(HOST), target, com1_log)
        host.start()
        try:
            yield host
        finally:
            host.close()


def harness_boot(lab: Lab, vm: VirtualHost, com1_log: Path) -> tuple[float, BootTimeline]:
    """Power-on through the BMC to SSH ready, the host off before and after."""
    _wait_ports_free(vm)
    with harness_host(lab, com1_log) as host:
        started = time.monotonic()
        timeline = host.power_cycle_to_shell(expect_xen=True)
        took = time.monotonic() - started
        host.power_off()
    return took, timeline


def panic_latency(host: Host) -> tuple[float, str]:
    """Crash dom0 through Host.run; seconds from the panic line's com1 timestamp to the
    call raising ConsoleCrash, and that line."""
    mark = host.com1.mark()
    try:
        host.run(CRASH_DOM0)
    except ConsoleCrash as crash:
        raised = time.time()
        error = crash
    else:
        raise BenchError(f"{host.name}: `{CRASH_DOM0}` returned; dom0 did not crash")
    try:
        panic_at, line = crash_line_time(host.com1.text_since(mark), host.watcher.stop_at)
    except ValueError:  # a crash seen before the command: not the one we caused
        raise BenchError(f"{host.name}: no crash on com1 after `{CRASH_DOM0}`, yet the "
                         f"call failed with: {str(error).splitlines()[0]}") from None
    return raised - panic_at, line


def wait_console_quiet(host: Host, quiet: float = 1.0, limit: float = 15.0) -> None:
    """Until the crash has printed its last line (Xen's "rebooting machine in 5
    seconds", then silence): a power cycle at once would take those lines, arriving
    after its watcher was reset, for a crash of the new boot."""
    deadline = time.monotonic() + limit
    seen, since = host.com1.bytes_received, time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.1)
        if host.com1.bytes_received != seen:
            seen, since = host.com1.bytes_received, time.monotonic()


# -- the run -------------------------------------------------------------------------------


@contextlib.contextmanager
def virtual_lab(lab: Lab, run_id: str) -> Iterator[None]:
    """The virtual lab up (hosts off) for the bench, and down afterwards; refused while
    it is up already, as a run or a person may be using it."""
    running = [vm.name for vm in control.virtual_hosts(lab)
               if control.host_status(vm).bmc_running]
    if running:
        owner = control.read_owner(lab) or {}
        raise BenchError(
            f"the virtual lab is up already ({', '.join(running)}; run "
            f"{owner.get('run_id', 'unknown')}, PID {owner.get('pid', 'unknown')}): the "
            "bench needs it to itself. Wait for that run to end, or stop the lab with "
            "`.venv/bin/xenhil vlab down`")
    image = build_image(cache_dir())
    fetch_builds(cache_dir(), image)
    control.write_owner(lab, run_id, keep_up=False)  # a `xenhil run` meanwhile is refused
    try:
        control.up(lab, image.disk)
        yield
    finally:
        control.down(lab)
        control.clear_owner(lab)


def measure(out: Path, rounds: int, panics: int) -> tuple[BootComparison, PanicLatencies]:
    lab = load_lab(DEFAULT_LAB)  # its key and password files exist once the lab is up
    out.mkdir(parents=True)
    vm = next(vm for vm in control.virtual_hosts(lab) if vm.name == HOST)
    build = load_build(expand(str(lab.options["default_build"])))
    com1_log = out / "com1" / f"{HOST}.log"
    with harness_host(lab, com1_log) as host:
        booted = host.boot_build(build)
        host.power_off()
    print(f"{HOST}: {build.label} installed, Xen {booted.xen_version} boots", flush=True)

    harness_times: list[float] = []
    bare_times: list[float] = []
    bare_timeout = lab.timeouts(vm.spec)["ssh_after_power_cycle"]
    for number in range(1, rounds + 1):
        took, timeline = harness_boot(lab, vm, com1_log)
        if not timeline.seen.get("xen", "").startswith(build.xen_version):
            raise BenchError(f"the harness boot showed Xen {timeline.seen.get('xen')} on "
                             f"com1, not {build.xen_version}")
        harness_times.append(took)
        stages = ", ".join(f"{name} {at:.1f}" for name, at in timeline.stages)
        print(f"round {number}/{rounds} harness {took:6.1f} s  (stages, s: {stages})",
              flush=True)
        took, version = bare_boot(vm, out, f"bare-{number}", bare_timeout)
        if not version.startswith(build.xen_version):
            raise BenchError(f"the bare boot showed {version} on com1, not Xen "
                             f"{build.xen_version}: not the same boot entry")
        bare_times.append(took)
        print(f"round {number}/{rounds} bare    {took:6.1f} s  (QEMU start to SSH banner; "
              f"Xen {version})", flush=True)
    boots = BootComparison(tuple(harness_times), tuple(bare_times))
    print(boots.render(), flush=True)

    latencies: list[float] = []
    with harness_host(lab, com1_log) as host:
        host.power_cycle_to_shell(expect_xen=True)
        for number in range(1, panics + 1):
            latency, line = panic_latency(host)
            latencies.append(latency)
            print(f"panic {number}/{panics}: {latency:.3f} s after {line}", flush=True)
            wait_console_quiet(host)
            recovery = host.power_cycle_to_shell(expect_xen=True)
            print(f"panic {number}/{panics}: back in Xen, SSH after "
                  f"{recovery.stages[-1][1]:.1f} s", flush=True)
        host.power_off()
    return boots, PanicLatencies(tuple(latencies))


def _end_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # the lab is stopped on the way out


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: at least 1")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=_positive, default=3,
                        help="boots to SSH of each kind, harness and bare interleaved")
    parser.add_argument("--panics", type=_positive, default=2,
                        help="dom0 crashes, each followed by a power cycle")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _end_on_signal)
    lab = load_lab(DEFAULT_LAB, check_files=False)
    run_id = datetime.now(UTC).strftime("bench-boot-and-panic-%Y%m%d-%H%M%S")
    out = lab.reports_dir / run_id
    started = time.monotonic()
    try:
        with virtual_lab(lab, run_id):
            boots, panics = measure(out, args.rounds, args.panics)
    except HarnessError as error:  # BenchError, or the lab's or a boot's own error
        print(f"\nbench: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    print(f"\n{boots.render()}\n{panics.render()}\n"
          f"{(time.monotonic() - started) / 60:.1f} min; com1 logs and bare boots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
