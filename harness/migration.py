"""Save/restore and migration of guests, as steps with their checks and figures.

- Hosts are paired first (migration_hosts.py): a move between hosts goes through ssh,
  a local one straight into the receiver (LOCAL_RECEIVER). After each step the guest
  must have kept running and be where it should be (migration_checks.py).
- Downtime: a ping probe (`ping -D`, every PROBE_INTERVAL s) from a dom0 to the guest
  during the whole migration; the longest silence between two replies is the guest's
  unreachability window.
- Figures (time, downtime, what `xl -vvv` reported) are attached to the test's report
  and logged.
"""

from __future__ import annotations

import logging
import shlex
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from . import evidence
from .errors import InfrastructureError
from .guests.dom0 import ensure_console_logging, upload_guest_files
from .guests.guest import Guest
from .host import Host
from .migration_checks import (
    GuestState,
    MigrationFailed,
    check_counting,
    check_kept_running,
    check_runs_only_on,
)
from .migration_output import MigrateOutput, ProbeResult, parse_migrate_output, parse_ping_probe
from .remote import CommandResult
from .xl_command import run_xl

log = logging.getLogger(__name__)

PROBE_INTERVAL = 0.1  # seconds between the probe's pings (root may go below 0.2)
SAVE_DIR = "/var/lib/xen/save"
# A local migration pipes xl's stream straight into the receiver: with `-s ''` xl runs
# the "host" argument as the receiving command. Through ssh to localhost, a TCG dom0
# moves about 6 MB/s, most of a move's time; moves between hosts go through ssh.
LOCAL_RECEIVER = "xl -vvv migrate-receive"
# Run in a guest (busybox has no nohup): keeps rewriting 16 MiB of tmpfs, so its
# memory never stops changing.
BUSY_GUEST = ("(while :; do dd if=/dev/urandom of=/run/busy bs=1M count=16 2>/dev/null; "
              "done) </dev/null >/dev/null 2>&1 &")


# --- downtime probe -----------------------------------------------------------------


class PingProbe:
    """`ping -D` from `host` to `address` in the background, until stopped."""

    def __init__(self, host: Host, address: str, tag: str) -> None:
        self.host = host
        self.address = address
        self.log_file = f"/run/xenhil-probe-{tag}.log"
        self.pid_file = f"/run/xenhil-probe-{tag}.pid"  # found by Host.CLEAR_LEFTOVERS
        self.pid: int | None = None

    def start(self) -> None:
        out = self.host.run(probe_start_command(self.address, self.log_file,
                                                self.pid_file)).stdout
        self.pid = int(out.strip())

    def stop(self) -> ProbeResult:
        assert self.pid is not None, "probe not started"
        result = self.host.run(probe_stop_command(self.pid, self.log_file, self.pid_file),
                               check=False)
        self.pid = None
        return parse_ping_probe(result.stdout)


def probe_start_command(address: str, log_file: str, pid_file: str) -> str:
    """Start the probe in the background; prints its PID (also kept in `pid_file`)."""
    return (f"nohup ping -D -O -n -i {PROBE_INTERVAL} -W 1 {shlex.quote(address)} "
            f"< /dev/null > {shlex.quote(log_file)} 2>&1 & echo $! | tee {shlex.quote(pid_file)}")


def probe_stop_command(pid: int, log_file: str, pid_file: str) -> str:
    """Stop the probe (SIGINT: ping prints its summary), print its log, remove its files."""
    files = shlex.join([log_file, pid_file])
    return f"kill -INT {int(pid)}; sleep 0.5; cat {shlex.quote(log_file)}; rm -f {files}"


# --- the operations -----------------------------------------------------------------


@dataclass
class MoveRecord:
    """One save/restore, checkpoint or migration and its figures."""

    what: str  # e.g. "migrate mig1 -> mig2"
    guest: str
    seconds: float  # the xl command(s), wall clock
    output: MigrateOutput | None = None
    probe: ProbeResult | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def figures(self) -> dict[str, object]:
        figures: dict[str, object] = {"what": self.what, "guest": self.guest,
                                      "seconds": round(self.seconds, 2)}
        if self.probe is not None:
            figures.update(downtime_s=round(self.probe.longest_gap, 2),
                           probe_sent=self.probe.sent, probe_lost=self.probe.lost)
        if self.output is not None:
            figures.update({k: v for k, v in asdict(self.output).items() if v is not None})
        figures.update(self.extra)
        return figures

    def summary(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.figures().items())


def record(move: MoveRecord) -> None:
    """Attach the figures to the test's report and log them; time and downtime are the
    test's figures too, compared with the baseline's."""
    log.info("figures: %s", move.summary())
    evidence.attach_json(f"figures: {move.what}", move.figures())
    evidence.figure(f"{move.what}: time", move.seconds, "s")
    if move.probe is not None:
        evidence.figure(f"{move.what}: downtime", move.probe.longest_gap, "s")


def wait_answers(guest: Guest, what: str) -> float:
    """Wait until the guest answers SSH on its (current) host; the seconds it took."""
    timeout = guest.host.timeouts["guest_boot"]
    try:
        return guest.host.wait_for(f"guest {guest.name} answering after {what}",
                                   lambda: guest.shell.answers(timeout=10), timeout)
    except TimeoutError:
        raise MigrationFailed(f"{guest.host.name}: guest {guest.name} does not answer SSH "
                              f"within {timeout:.0f} s after {what}") from None


def migrate(guest: Guest, to: Host, *, options: Sequence[str] = (),
            probe_from: Host | None = None, since: GuestState | None = None) -> MoveRecord:
    """`xl -vvv migrate [options] GUEST TO` on the guest's host (migrate_command), with
    a downtime probe (from `probe_from`, default the destination); then the guest must
    run on `to` only, answer, and have kept running since `since` (default: its state
    just before). Returns the figures (also recorded)."""
    source = guest.host
    local = source is to
    what = f"migrate {source.name} -> {'itself' if local else to.name}"
    before = since or GuestState.read(guest)
    probe = PingProbe(probe_from or to, guest.ip, guest.name)
    ensure_console_logging(to)  # the guest's console goes on in `to`'s log
    if guest.config.type == "hvm":  # the destination's device model loads them again
        upload_guest_files(to, guest.image.files_for("hvm"))
    console_offset = guest.console_size_on(to)
    with evidence.step(f"{what}: {guest.name}"):
        probe.start()
        try:
            started = time.monotonic()
            command = migrate_command(guest.name, None if local else to.name, options)
            result = source.run(command, timeout=source.timeouts["xl_migrate"], check=False)
            seconds = time.monotonic() - started
            evidence.attach_text(f"migration transcript: {what}", result.render())
            output = parse_migrate_output(result.stderr + result.stdout)
            if not result.ok:
                raise MigrationFailed(
                    f"{source.name}: `{command}` "
                    f"{'timed out' if result.exit_status is None else 'failed'} "
                    f"({output.first_error or 'no error logged'}); its output ends:\n"
                    f"{(result.stderr + result.stdout).strip()[-3000:]}")
            guest.moved_to(to, console_offset=console_offset)
            wait_answers(guest, what)
        finally:
            probed = probe.stop()
    move = MoveRecord(what, guest.name, seconds, output, probed)
    record(move)
    check_runs_only_on(guest, to, [source])
    after = GuestState.read(guest)
    check_kept_running(guest, before, after, what)
    check_counting(guest, after)
    return move


def migrate_command(guest_name: str, destination: str | None,
                    options: Sequence[str] = ()) -> str:
    """`xl -vvv migrate` of `guest_name` to the host named `destination` (through ssh),
    or to its own host when None (piped into LOCAL_RECEIVER)."""
    if destination is None:
        return "xl -vvv migrate " + shlex.join(["-s", "", *options, guest_name,
                                                LOCAL_RECEIVER])
    return "xl -vvv migrate " + shlex.join([*options, guest_name, destination])


def save(guest: Guest, *, checkpoint: bool = False) -> tuple[str, MoveRecord]:
    """`xl save [-c] GUEST FILE`; returns the file and the figures. Without checkpoint
    the guest is gone afterwards; with it, it runs on."""
    host = guest.host
    path = f"{SAVE_DIR}/{guest.name}.save"
    flag = "-c " if checkpoint else ""
    what = f"save{' -c' if checkpoint else ''} on {host.name}"
    with evidence.step(f"{what}: {guest.name}"):
        if not checkpoint:
            guest.shell.close()
        started = time.monotonic()
        run_xl(host, f"mkdir -p {SAVE_DIR} && xl -vvv save {flag}"
                     f"{shlex.join([guest.name, path])}",
               "xl_save", f"guest {guest.name} was not saved", error=MigrationFailed)
        seconds = time.monotonic() - started
        size = int(host.run(f"stat -c %s {shlex.quote(path)}").stdout)
    # (xl's save output is not a migration's: no "Migration successful" to read)
    move = MoveRecord(what, guest.name, seconds, extra={"image_mb": round(size / 2**20, 1)})
    record(move)
    return path, move


def restore(guest: Guest, path: str) -> MoveRecord:
    """`xl restore FILE` on the guest's host, then wait until it answers SSH."""
    host = guest.host
    what = f"restore on {host.name}"
    with evidence.step(f"{what}: {guest.name}"):
        started = time.monotonic()
        run_xl(host, f"xl -vvv restore {shlex.quote(path)}", "xl_restore",
               f"guest {guest.name} was not restored from {path}", error=MigrationFailed)
        seconds = time.monotonic() - started
        answering = wait_answers(guest, what)
    move = MoveRecord(what, guest.name, seconds, extra={"answers_after_s": round(answering, 2)})
    record(move)
    return move


class BackgroundMigration:
    """`xl -vvv migrate GUEST TO` running in a thread, for a test that disturbs it
    (e.g. powers the destination off) and then looks at how it ended."""

    def __init__(self, guest: Guest, to: Host) -> None:
        self.guest = guest
        self.source = guest.host
        self.command = migrate_command(guest.name, to.name)
        self.result: CommandResult | None = None
        self.error: BaseException | None = None
        self.started = 0.0
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, name=f"migrate-{guest.name}",
                                        daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.source.run(self.command, check=False,
                                          timeout=self.source.timeouts["xl_migrate"])
        except BaseException as error:  # handed to the test's thread by wait()
            self.error = error
        self.seconds = time.monotonic() - self.started

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def wait(self) -> CommandResult:
        self._thread.join(self.source.timeouts["xl_migrate"] + 60)
        if self.error is not None:
            raise self.error
        if self.result is None:
            raise InfrastructureError(f"{self.source.name}: `{self.command}` did not end")
        evidence.attach_text(f"migration transcript: {self.command}", self.result.render())
        return self.result


# --- disks --------------------------------------------------------------------------


def attach_disk(guest: Guest, device: str, vdev: str = "xvdb") -> str:
    """`xl block-attach` dom0's `device` to the guest as `vdev` (kept in the domain's
    config, so it migrates with it); returns the guest's device path once it exists."""
    guest.host.run(f"xl block-attach {shlex.quote(guest.name)} "
                   f"{shlex.quote(f'format=raw,vdev={vdev},access=rw,target={device}')}")
    path = f"/dev/{vdev}"
    timeout = guest.host.timeouts["guest_boot"]
    try:
        guest.host.wait_for(f"{path} in guest {guest.name}",
                            lambda: guest.run(f"test -b {shlex.quote(path)}",
                                              check=False).ok, timeout)
    except TimeoutError:
        raise MigrationFailed(f"guest {guest.name}: no {path} within {timeout:.0f} s of "
                              f"`xl block-attach` of {guest.host.name}:{device}") from None
    return path


class DiskPattern:
    """Random blocks the guest writes to its disk, one per step, each checked again
    after every later step (read past the guest's page cache)."""

    BLOCK = "bs=64k count=16"  # 1 MiB

    def __init__(self, guest: Guest, path: str) -> None:
        self.guest = guest
        self.path = path
        self.written: list[str] = []  # md5 of block N, at offset N MiB

    def write(self) -> None:
        n = len(self.written)
        self.guest.run(f"dd if=/dev/urandom of={shlex.quote(self.path)} {self.BLOCK} seek={16 * n} "
                       f"conv=fsync 2>/dev/null")
        self.written.append(self._read(n))

    def _read(self, n: int) -> str:
        return self.guest.run(f"dd if={shlex.quote(self.path)} {self.BLOCK} skip={16 * n} "
                              f"2>/dev/null | md5sum").stdout.split()[0]

    def check(self, where: str) -> None:
        self.guest.run("sync && echo 3 > /proc/sys/vm/drop_caches")
        for n, expected in enumerate(self.written):
            found = self._read(n)
            if found != expected:
                raise MigrationFailed(f"guest {self.guest.name} {where}: block {n} of "
                                      f"{self.path} reads {found}, was written as {expected}")
