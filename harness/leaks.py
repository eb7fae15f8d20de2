"""The leak check: what a test leaves behind on a host that was not there before.

Before a test's first guest on a host, the harness notes the host's state; after the
test's guests are destroyed it looks again. Anything new is a leak: a domain, a vif or
tap device, a xenstore path of a domain, a loop device, a file in /var/run/xen or /tmp.
Teardown in Xen is partly asynchronous (hotplug scripts, xenstore cleanup), so the check
waits up to `leak_settle` for the new things to go before it calls them leaked.

The same check, with a script of its own, verifies that a migration pairing left no
trace once it is removed (harness/migration_hosts.py `paired`).
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from functools import partial

from . import evidence
from .errors import ProductFailure
from .host import Host
from .side_by_side import on_each_host

log = logging.getLogger(__name__)

# One shell script, one round trip: each section starts with "## name". A fork and exec
# on a PV dom0 under TCG takes about 0.1 s: the script runs 7 programs, not 13-19 (globs
# and builtins instead of ls, grep, sed and losetup; xl list's lines are read here).
SNAPSHOT = r"""
echo '## domains'; xl list 2>/dev/null
echo '## network devices'
for dev in /sys/class/net/vif* /sys/class/net/tap*; do
    [ -e "$dev" ] && echo "${dev##*/}"
done
echo '## xenstore'
for dir in /local/domain /vm /libxl; do xenstore-list -p "$dir" 2>/dev/null; done
types=$(xenstore-list -p /local/domain/0/backend 2>/dev/null)
if [ -n "$types" ]; then
    xenstore-list -p $types 2>/dev/null \
        || for type in $types; do xenstore-list -p "$type" 2>/dev/null; done
fi
echo '## loop devices'
for backing in /sys/block/loop*/loop/backing_file; do
    [ -e "$backing" ] || continue
    read -r file < "$backing"
    device=${backing%/loop/backing_file}
    echo "/dev/${device##*/} $file"
done
echo '## files'; find /var/run/xen /tmp -xdev -mindepth 1 2>/dev/null
true
"""
SECTIONS = ("domains", "network devices", "xenstore", "loop devices", "files")
# Xen's own files, written by the toolstack and kept on purpose: not a test's leak.
# domid-history: libxl's record of recently used domain ids (4.15+), made at the first
# domain's destruction.
NOT_LEAKS = re.compile(r"^/var/run/xen/(domid-history)$")


class Leaked(ProductFailure):
    """A test left something behind on a host after its guests were destroyed."""


@dataclass(frozen=True)
class HostState:
    """What of a host's state a guest can leave behind: section -> items."""

    sections: dict[str, frozenset[str]]

    @classmethod
    def parse(cls, output: str) -> HostState:
        sections: dict[str, set[str]] = {name: set() for name in SECTIONS}
        current: set[str] | None = None
        for line in output.splitlines():
            if line.startswith("## "):
                current = sections.setdefault(line[3:].strip(), set())
            elif current is not None and line.strip():
                current.add(line.strip())
        sections["files"] = {path for path in sections["files"]
                             if not NOT_LEAKS.match(path)}
        # xl list's lines: a domain's name first; its header and dom0 are no guests
        sections["domains"] = {line.split()[0] for line in sections["domains"]} \
            - {"Name", "Domain-0"}
        return cls({name: frozenset(items) for name, items in sections.items()})

    def new_since(self, before: HostState) -> dict[str, list[str]]:
        """What this state has that `before` had not, per section (sections with
        nothing new left out)."""
        new = {name: sorted(items - before.sections.get(name, frozenset()))
               for name, items in self.sections.items()}
        return {name: items for name, items in new.items() if items}


def snapshot(host: Host, script: str = SNAPSHOT) -> HostState:
    return HostState.parse(host.run(script, timeout=host.timeouts["command"]).stdout)


def describe(host_name: str, new: dict[str, list[str]], limit: int = 10) -> str:
    parts = []
    for section, items in new.items():
        shown = ", ".join(items[:limit]) + (f" and {len(items) - limit} more"
                                            if len(items) > limit else "")
        parts.append(f"{section}: {shown}")
    return f"{host_name}: " + "; ".join(parts)


class LeakCheck:
    """Notes each host's state once (`watch`), and compares it at the end (`verify`).
    The state is what `script` prints (by default what guests leave); `after` names what
    should have removed anything new, for the message; `settles`: wait up to
    `leak_settle` for it to go (Xen's teardown is partly asynchronous), else look once."""

    def __init__(self, script: str = SNAPSHOT, *,
                 after: str = "the test's guests were destroyed", settles: bool = True) -> None:
        self.script = script
        self.after = after
        self.settles = settles
        self.before: dict[str, tuple[Host, HostState]] = {}

    def watch(self, *hosts: Host) -> None:
        """Note the state of each host not noted yet (hosts side by side)."""
        new = [host for host in hosts if host.name not in self.before]
        if not new:
            return
        with evidence.step(f"leak check: note the state of {', '.join(h.name for h in new)}"):
            states = on_each_host(new, partial(snapshot, script=self.script),
                                  max(host.timeouts["command"] for host in new) + 10,
                                  "leak check")
        for host in new:
            self.before[host.name] = (host, states[host.name])

    def leaks(self) -> dict[str, dict[str, list[str]]]:
        """Host name -> what is new there, after waiting for teardown to settle (hosts
        side by side). A crashed or hung host is not checked: its power cycle clears it."""
        checked = [host for host, _ in self.before.values() if host.health.current is None]
        deadline = max([(host.timeouts["leak_settle"] if self.settles else 0)
                        + 2 * host.timeouts["command"] for host in checked], default=0.0)
        found = on_each_host(checked, self._new_on, deadline, "leak check")
        return {name: new for name, new in found.items() if new}

    def _new_on(self, host: Host) -> dict[str, list[str]]:
        before = self.before[host.name][1]
        new: dict[str, list[str]] = {}

        def settled() -> bool:
            nonlocal new
            new = snapshot(host, self.script).new_since(before)
            return not new

        if not self.settles:
            settled()
            return new
        with contextlib.suppress(TimeoutError):  # then `new` is what is left
            host.wait_for("guest teardown to settle", settled,
                          host.timeouts["leak_settle"], interval=2)
        return new

    def verify(self) -> None:
        """Raise Leaked naming everything left behind, on every host watched."""
        with evidence.step(f"leak check: {self.after}"):
            leaks = self.leaks()
        if leaks:
            raise Leaked(f"left behind after {self.after}: "
                         + " | ".join(describe(name, new) for name, new in leaks.items()))
