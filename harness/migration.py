"""Save/restore and migration of guests, as steps with their checks and figures.

- Host pairing: every dom0 of a pair trusts every other's (and its own) root SSH key,
  knows their host keys (pinned from the lab file) and resolves their lab names to
  their link addresses, so `xl migrate GUEST PEER` works (xl runs
  `ssh PEER xl migrate-receive`).
- A guest "kept running" across a save/restore or migration: the same boot id, and
  its seconds counter and uptime did not go back. A silent reboot is a product failure.
- Downtime: a ping probe (`ping -D`, every PROBE_INTERVAL s) from a dom0 to the guest
  during the whole migration; the longest silence between two replies is the guest's
  unreachability window.
- Figures (time, downtime, what `xl -vvv` reported) are attached to the test's report
  and logged.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import allure

from .errors import ConfigError, InfrastructureError, ProductFailure
from .guests.dom0 import ensure_console_logging
from .guests.guest import Guest
from .host import Host
from .migration_output import MigrateOutput, ProbeResult, parse_migrate_output, parse_ping_probe
from .remote import CommandResult
from .xl import parse_xl_info, parse_xl_list
from .xl_command import run_xl

log = logging.getLogger(__name__)

PEER_MARK = "xen-hil-migration-peer"  # ends the lines the harness adds to /etc/hosts
DOM0_KEY = "/root/.ssh/id_ed25519"
SSH_CLIENT_CONFIG = "/etc/ssh/ssh_config.d/xenhil-migration.conf"  # Debian includes it
PROBE_INTERVAL = 0.1  # seconds between the probe's pings (root may go below 0.2)
SAVE_DIR = "/var/lib/xen/save"
# Run in a guest (busybox has no nohup): keeps rewriting 16 MiB of tmpfs, so its
# memory never stops changing.
BUSY_GUEST = ("(while :; do dd if=/dev/urandom of=/run/busy bs=1M count=16 2>/dev/null; "
              "done) </dev/null >/dev/null 2>&1 &")
# Names xl gives a guest while it migrates: on the destination while it arrives, on the
# source once it has left; neither may remain afterwards.
TRANSIT_SUFFIXES = ("--incoming", "--migratedaway")


class MigrationFailed(ProductFailure):
    """`xl migrate`, save or restore failed, or left the guest in the wrong place."""


class GuestRebooted(ProductFailure):
    """The guest's counter, uptime or boot id show it restarted: it did not keep running."""


# --- host pairing -------------------------------------------------------------------


def pair_hosts(hosts: Sequence[Host]) -> None:
    """Let the dom0s of `hosts` `xl migrate` to each other and to themselves (idempotent);
    each one then proves it can SSH to every name in batch mode."""
    missing = [host.name for host in hosts if host.spec.link_address is None]
    if missing:
        raise ConfigError(f"{', '.join(missing)}: no link_address in the lab file; "
                          "migration goes over the host-to-host link")
    public_keys = [
        host.run(f"test -f {DOM0_KEY} || ssh-keygen -q -t ed25519 -N '' -C xenhil-{host.name} "
                 f"-f {DOM0_KEY}; cat {DOM0_KEY}.pub").stdout.strip()
        for host in hosts
    ]
    etc_hosts = "".join(f"{h.spec.link_address} {h.name} # {PEER_MARK}\n" for h in hosts)
    for host in hosts:
        known = "".join(f"{names} {key} {PEER_MARK}\n" for names, key in _known_hosts(host, hosts))
        script = [
            "mkdir -p -m 700 /root/.ssh",
            "touch /root/.ssh/authorized_keys /root/.ssh/known_hosts",
            *(f"grep -qxF {shlex.quote(key)} /root/.ssh/authorized_keys || "
              f"echo {shlex.quote(key)} >> /root/.ssh/authorized_keys" for key in public_keys),
            f"sed -i '/ {PEER_MARK}$/d' /etc/hosts /root/.ssh/known_hosts",
            f"printf '%s' {shlex.quote(etc_hosts)} >> /etc/hosts",
            f"printf '%s' {shlex.quote(known)} >> /root/.ssh/known_hosts",
            f"printf '%s' {shlex.quote(_ssh_client_config(hosts))} > {SSH_CLIENT_CONFIG}",
        ]
        host.run(" && ".join(script))
    for host in hosts:
        for peer in ["localhost", *(h.name for h in hosts)]:
            result = host.run(f"ssh -o BatchMode=yes -o ConnectTimeout=20 {peer} true",
                              check=False)
            if not result.ok:
                raise InfrastructureError(
                    f"{host.name}: root cannot SSH to {peer} after pairing (needed by xl "
                    f"migrate): {(result.stderr or result.stdout).strip()}")


def _ssh_client_config(hosts: Sequence[Host]) -> str:
    # A peer that dies mid-migration is noticed in ~15 s, not after TCP's retries (minutes).
    return (f"# xen-hil: migration peers (harness/migration.py)\n"
            f"Host localhost {' '.join(host.name for host in hosts)}\n"
            f"    BatchMode yes\n"
            f"    ServerAliveInterval 5\n"
            f"    ServerAliveCountMax 3\n")


def _known_hosts(host: Host, hosts: Sequence[Host]) -> list[tuple[str, str]]:
    """(names, `type key`) for known_hosts on `host`: every host of the pair, itself
    also as localhost. Keys pinned in the lab file, else asked from the host itself."""
    entries = []
    for peer in hosts:
        names = f"{peer.name},{peer.spec.link_address}"
        if peer is host:
            names += ",localhost,127.0.0.1"
        key_file = peer.spec.ssh.host_key_file
        if key_file is not None:
            key = " ".join(key_file.read_text().split()[:2])
        else:
            scan = host.run(f"ssh-keyscan -t ed25519 {peer.spec.link_address}").stdout
            key = " ".join(scan.split()[1:3])
        entries.append((names, key))
    return entries


# --- guest continuity ---------------------------------------------------------------

STATE_COMMAND = "cat /run/counter /proc/uptime /proc/sys/kernel/random/boot_id"


@dataclass(frozen=True)
class GuestState:
    """What tells a guest that kept running from one that restarted."""

    counter: int  # seconds counted since its /init started
    uptime: float
    boot_id: str

    @classmethod
    def parse(cls, text: str) -> GuestState:
        """Output of STATE_COMMAND: counter, uptime + idle time, boot id."""
        fields = text.split()
        if len(fields) != 4:
            raise ValueError(f"unexpected guest state output: {text!r}")
        return cls(int(fields[0]), float(fields[1]), fields[3])

    @classmethod
    def read(cls, guest: Guest) -> GuestState:
        return cls.parse(guest.run(STATE_COMMAND).stdout)


def restart_signs(before: GuestState, after: GuestState) -> list[str]:
    """What in `after` says the guest started over since `before` (empty: it did not)."""
    signs = []
    if after.boot_id != before.boot_id:
        signs.append(f"boot id changed ({before.boot_id} -> {after.boot_id})")
    if after.counter < before.counter:
        signs.append(f"counter went back ({before.counter} -> {after.counter})")
    if after.uptime < before.uptime:
        signs.append(f"uptime went back ({before.uptime:.0f} s -> {after.uptime:.0f} s)")
    return signs


def check_kept_running(guest: Guest, before: GuestState, after: GuestState, what: str) -> None:
    """Raise GuestRebooted unless `after` continues `before`."""
    problems = restart_signs(before, after)
    if problems:
        raise GuestRebooted(f"guest {guest.name} restarted during {what}: "
                            + "; ".join(problems))


def check_counting(guest: Guest, since: GuestState) -> None:
    """The guest's counter moves on from `since` (it runs, it is not just listed)."""
    timeout = guest.host.timeouts["guest_counter"]
    try:
        guest.host.wait_for(f"guest {guest.name} counting", lambda: guest.counter() > since.counter,
                            timeout)
    except TimeoutError:
        raise MigrationFailed(f"{guest.host.name}: guest {guest.name}'s counter stays at "
                              f"{guest.counter()} for {timeout:.0f} s: it does not run") from None


# --- placement ----------------------------------------------------------------------


def check_runs_only_on(guest: Guest, host: Host, elsewhere: Sequence[Host]) -> None:
    """The guest runs (not paused) on `host`, and no other host lists it, under any
    of the names xl gives it in transit."""
    listed = parse_xl_list(host.run("xl list").stdout)
    mine = [domain for domain in listed if domain.name == guest.name]
    if not mine:
        raise MigrationFailed(f"{host.name}: guest {guest.name} not in xl list: "
                              f"{[d.name for d in listed]}")
    if "p" in mine[0].state or "c" in mine[0].state:
        raise MigrationFailed(f"{host.name}: guest {guest.name} is not running: "
                              f"state {mine[0].state}")
    transit = {guest.name + suffix for suffix in TRANSIT_SUFFIXES}
    for other in [host, *(h for h in elsewhere if h is not host)]:
        names = {domain.name for domain in parse_xl_list(other.run("xl list").stdout)}
        left = names & (transit if other is host else transit | {guest.name})
        if left:
            raise MigrationFailed(f"{other.name}: still lists {', '.join(sorted(left))} "
                                  f"after {guest.name} moved to {host.name}")


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
        out = self.host.run(
            f"nohup ping -D -O -n -i {PROBE_INTERVAL} -W 1 {shlex.quote(self.address)} "
            f"< /dev/null > {self.log_file} 2>&1 & echo $! | tee {self.pid_file}").stdout
        self.pid = int(out.strip())

    def stop(self) -> ProbeResult:
        result = self.host.run(f"kill -INT {self.pid}; sleep 0.5; cat {self.log_file}; "
                               f"rm -f {self.log_file} {self.pid_file}", check=False)
        self.pid = None
        return parse_ping_probe(result.stdout)


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
    """Attach the figures to the test's report and log them."""
    log.info("figures: %s", move.summary())
    allure.attach(json.dumps(move.figures(), indent=2), name=f"figures: {move.what}",
                  attachment_type=allure.attachment_type.JSON)


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
    """`xl -vvv migrate [options] GUEST TO` on the guest's host, with a downtime probe
    (from `probe_from`, default the destination); then the guest must run on `to`
    only, answer, and have kept running since `since` (default: its state just
    before). Returns the figures (also recorded)."""
    source = guest.host
    local = source is to
    what = f"migrate {source.name} -> {'itself' if local else to.name}"
    before = since or GuestState.read(guest)
    probe = PingProbe(probe_from or to, guest.ip, guest.name)
    ensure_console_logging(to)  # the guest's console goes on in `to`'s log
    console_offset = guest.console_size_on(to)
    with allure.step(f"{what}: {guest.name}"):
        probe.start()
        try:
            started = time.monotonic()
            command = " ".join(["xl -vvv migrate", *options, guest.name,
                                "localhost" if local else to.name])
            result = source.run(command, timeout=source.timeouts["xl_migrate"], check=False)
            seconds = time.monotonic() - started
            allure.attach(result.render(), name=f"migration transcript: {what}",
                          attachment_type=allure.attachment_type.TEXT)
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


def save(guest: Guest, *, checkpoint: bool = False) -> tuple[str, MoveRecord]:
    """`xl save [-c] GUEST FILE`; returns the file and the figures. Without checkpoint
    the guest is gone afterwards; with it, it runs on."""
    host = guest.host
    path = f"{SAVE_DIR}/{guest.name}.save"
    flag = "-c " if checkpoint else ""
    what = f"save{' -c' if checkpoint else ''} on {host.name}"
    with allure.step(f"{what}: {guest.name}"):
        if not checkpoint:
            guest.shell.close()
        started = time.monotonic()
        run_xl(host, f"mkdir -p {SAVE_DIR} && xl -vvv save {flag}{guest.name} {path}",
               "xl_save", f"guest {guest.name} was not saved", error=MigrationFailed)
        seconds = time.monotonic() - started
        size = int(host.run(f"stat -c %s {path}").stdout)
    # (xl's save output is not a migration's: no "Migration successful" to read)
    move = MoveRecord(what, guest.name, seconds, extra={"image_mb": round(size / 2**20, 1)})
    record(move)
    return path, move


def restore(guest: Guest, path: str) -> MoveRecord:
    """`xl restore FILE` on the guest's host, then wait until it answers SSH."""
    host = guest.host
    what = f"restore on {host.name}"
    with allure.step(f"{what}: {guest.name}"):
        started = time.monotonic()
        run_xl(host, f"xl -vvv restore {path}", "xl_restore",
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
        self.command = f"xl -vvv migrate {guest.name} {to.name}"
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
        allure.attach(self.result.render(), name=f"migration transcript: {self.command}",
                      attachment_type=allure.attachment_type.TEXT)
        return self.result


# --- disks --------------------------------------------------------------------------


def attach_disk(guest: Guest, device: str, vdev: str = "xvdb") -> str:
    """`xl block-attach` dom0's `device` to the guest as `vdev` (kept in the domain's
    config, so it migrates with it); returns the guest's device path once it exists."""
    guest.host.run(f"xl block-attach {guest.name} "
                   f"'format=raw,vdev={vdev},access=rw,target={device}'")
    path = f"/dev/{vdev}"
    timeout = guest.host.timeouts["guest_boot"]
    try:
        guest.host.wait_for(f"{path} in guest {guest.name}",
                            lambda: guest.run(f"test -b {path}", check=False).ok, timeout)
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
        self.guest.run(f"dd if=/dev/urandom of={self.path} {self.BLOCK} seek={16 * n} "
                       f"conv=fsync 2>/dev/null")
        self.written.append(self._read(n))

    def _read(self, n: int) -> str:
        return self.guest.run(f"dd if={self.path} {self.BLOCK} skip={16 * n} 2>/dev/null "
                              f"| md5sum").stdout.split()[0]

    def check(self, where: str) -> None:
        self.guest.run("sync && echo 3 > /proc/sys/vm/drop_caches")
        for n, expected in enumerate(self.written):
            found = self._read(n)
            if found != expected:
                raise MigrationFailed(f"guest {self.guest.name} {where}: block {n} of "
                                      f"{self.path} reads {found}, was written as {expected}")


def can_log_dirty_pv(virt_caps: str) -> bool:
    """`xl info`'s virt_caps lists shadow paging (PV log-dirty needs it)."""
    return "shadow" in virt_caps.split()


def live_migration_unsupported(host: Host) -> str | None:
    """Why this Xen cannot live-migrate PV guests, or None. Live migration tracks the
    pages a guest dirties (log-dirty); for PV guests that is shadow paging, which a
    build without CONFIG_SHADOW_PAGING lacks (Debian's 4.17.7+13-0+deb12u1: `xl
    migrate` fails with "Failed to enable logdirty")."""
    caps = parse_xl_info(host.run("xl info").stdout).get("virt_caps", "")
    if can_log_dirty_pv(caps):
        return None
    return (f"{host.name}: this Xen has no shadow paging (xl info virt_caps: {caps!r}; "
            "built without CONFIG_SHADOW_PAGING), which live migration of PV guests needs "
            "for log-dirty tracking")


def usage_options(usage: str) -> set[str]:
    """The options an `xl help COMMAND` usage lists, without dashes, `-` in long names
    read as `_`: e.g. {"h", "C", "debug", "max_iters"}."""
    return {name.replace("-", "_")
            for name in re.findall(r"^\s*--?([A-Za-z][A-Za-z_-]*)", usage, re.MULTILINE)}
