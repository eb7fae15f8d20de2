"""Harness self-test scenario, run by tests/e2e/test_run.py against the virtual lab
(not a user scenario: its file name does not start with test_).

The guest restarts without anyone noticing (a sysrq reboot from inside; Xen restarts
the domain, it comes up again with the same name, address and SSH key), then it is
saved and restored. Both succeed; the harness's continuity check, the one every
save/restore and migration runs, must still fail the test as a product failure,
because the boot id (and counter, uptime) started over since the state the test knew.
Save/restore, not live migration: the lab's default build (Debian 4.17.7) cannot
live-migrate PV guests (no shadow paging), and one host is enough.
"""

from __future__ import annotations

from harness.guests.guest import GuestFactory
from harness.host import Host
from harness.migration import restore, save, wait_answers
from harness.migration_checks import GuestState, check_kept_running


def domain_id(host: Host, name: str) -> str | None:
    result = host.run(f"xl domid {name}", check=False)
    return result.stdout.strip() if result.ok else None


def test_silently_rebooted_guest_is_caught(xen_host: Host, guests: GuestFactory) -> None:
    host = xen_host
    guest = guests(on=host)
    known = GuestState.read(guest)
    domid = domain_id(host, guest.name)
    guest.run("(sleep 1; echo b > /proc/sysrq-trigger) </dev/null >/dev/null 2>&1 &")
    guest.shell.close()
    host.wait_for(f"guest {guest.name} restarted as a new domain",
                  lambda: domain_id(host, guest.name) not in (None, domid),
                  host.timeouts["guest_boot"])
    wait_answers(guest, "its silent reboot")
    path, _ = save(guest)
    restore(guest, path)
    check_kept_running(guest, known, GuestState.read(guest), "save/restore")  # must fail
