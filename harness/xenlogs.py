"""Xen's logs on a host, collected for a failed test's report: `xl dmesg` and the
tails of the files in /var/log/xen (libxl's per-guest logs, the hotplug scripts')."""

from __future__ import annotations

from .host import Host

XEN_LOGS = "/var/log/xen/*.log"


def log_tails(paths: str, lines: int) -> str:
    """A shell command printing "== FILE" and the last `lines` lines of each file of
    `paths` (space-separated, globs allowed) that exists."""
    return (f'for f in {paths}; do [ -e "$f" ] && echo "== $f" && tail -n {lines} "$f"; '
            "done")


def xen_logs(host: Host, *, dmesg_lines: int = 300, lines: int = 150) -> str:
    """The end of `xl dmesg`, then the tail of every file in /var/log/xen."""
    result = host.run(f"xl dmesg | tail -n {dmesg_lines}; echo; {log_tails(XEN_LOGS, lines)}",
                      check=False)
    return result.stdout + result.stderr
