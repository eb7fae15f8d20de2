"""Checks after a save/restore or migration: the guest kept running (the same boot
id; its seconds counter and uptime did not go back: a silent reboot is a product
failure), it still counts, and it runs on one host only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ProductFailure
from .guests.guest import Guest
from .host import Host
from .xl import parse_xl_list

# Names xl gives a guest while it migrates: on the destination while it arrives, on the
# source once it has left; neither may remain afterwards.
TRANSIT_SUFFIXES = ("--incoming", "--migratedaway")


class MigrationFailed(ProductFailure):
    """`xl migrate`, save or restore failed, or left the guest in the wrong place."""


class GuestRebooted(ProductFailure):
    """The guest's counter, uptime or boot id show it restarted: it did not keep running."""


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
