"""Guests: the life of a PV guest on the build under test.

Procedure (once per host): create a PV guest (the harness's test guest: a Debian
kernel and a busybox initramfs, on the bridge xenbr0), see it come up, talk to it, then
end it both ways, `xl shutdown -w` and `xl destroy`; each time it must be gone from
`xl list`. Every guest's console log is attached to the report.
"""

from __future__ import annotations

import pytest

from harness.guests.guest import GuestFactory
from harness.guests.image import READY_MARKER, STOP_MARKER
from harness.host import Host

pytestmark = pytest.mark.area("guests")


def test_pv_guest_comes_up(xen_host: Host, pv_guest: GuestFactory) -> None:
    guest = pv_guest(on=xen_host)  # xl create, then wait for its ready marker and SSH
    assert guest.listed(), "xl list does not show the guest"
    console = guest.console_log()
    assert "Linux version" in console, "the guest console was not captured from its start"
    assert f"{READY_MARKER} {guest.name}" in console
    assert guest.answers_ping(), f"dom0 gets no ping reply from the guest at {guest.ip}"
    assert guest.run("hostname").stdout.strip() == guest.name
    assert guest.run("cat /sys/class/net/eth0/address").stdout.strip() == guest.mac
    assert guest.counter() > 0, "the guest's seconds counter does not run"


def test_pv_guest_shutdown_then_destroy(xen_host: Host, pv_guest: GuestFactory) -> None:
    guest = pv_guest(on=xen_host)
    guest.shutdown()  # xl shutdown -w: the guest powers itself off
    assert not guest.listed(), "the guest is still in xl list after its shutdown"
    assert STOP_MARKER in guest.console_log(), "the guest did not power off in order"
    assert not guest.answers_ping(count=1), "the guest still answers ping"

    again = pv_guest(on=xen_host, name=guest.name)  # the name is free again
    again.destroy()  # xl destroy: ended at once
    assert not again.listed(), "the guest is still in xl list after xl destroy"
