"""Bridged networking (vif-bridge): guests on dom0's bridge xenbr0.

Procedure: a guest's vif must join xenbr0 and leave with the guest; the guest talks to
dom0, to a guest on the same host and to a guest on the other host (over the
host-to-host network the bridge is built on): 100 pings at 0.2 s, under 1 % loss; a
8 MiB TCP transfer into dom0 with its throughput recorded; NIC hotplug with
`xl network-attach` / `network-detach`.
"""

from __future__ import annotations

import pytest

from harness.figures import Figures
from harness.guests.config import BRIDGE
from harness.guests.guest import GuestFactory
from harness.host import Host
from harness.network import bridge_of, check_pings, measure_transfer, wait_gone

pytestmark = pytest.mark.area("networking")


def bridge_address(host: Host) -> str:
    return host.run(f"ip -o -4 addr show dev {BRIDGE}").stdout.split()[3].split("/")[0]


def test_bridged_guest_talks_to_dom0(xen_host: Host, guests: GuestFactory,
                                     figures: Figures) -> None:
    guest = guests(on=xen_host)
    vif = guest.vif()
    assert bridge_of(xen_host, vif) == BRIDGE, f"{vif} is not a port of {BRIDGE}"
    dom0 = bridge_address(xen_host)
    check_pings(guest, {"guest -> dom0": dom0}, figures)
    measure_transfer(guest, xen_host, dom0, "guest -> dom0 TCP", figures)

    guest.destroy()
    assert wait_gone(xen_host, vif, xen_host.timeouts["leak_settle"]), \
        f"{vif} is still in dom0 after the guest was destroyed"


def test_bridged_guests_on_one_host_talk(xen_host: Host, guests: GuestFactory,
                                         figures: Figures) -> None:
    first, second = guests.on_each(xen_host, xen_host)
    check_pings(first, {"guest -> guest, same host": second.ip}, figures)


def test_bridged_guests_on_two_hosts_talk(xen_host_pair: tuple[Host, Host],
                                          guests: GuestFactory, figures: Figures) -> None:
    here, there = xen_host_pair
    local, remote = guests.on_each(here, there)
    check_pings(local, {f"guest on {here.name} -> guest on {there.name}": remote.ip}, figures)
    measure_transfer(local, there, bridge_address(there),
                     f"guest on {here.name} -> dom0 of {there.name} TCP", figures)


def test_nic_hotplug(xen_host: Host, guests: GuestFactory, figures: Figures) -> None:
    guest = guests(on=xen_host)
    mac, _ = guests.addresses.next(guests.network_of(xen_host))
    guest.network_attach(mac)
    seconds = xen_host.wait_for(f"{mac} in the guest",
                                lambda: mac in guest.interfaces().values(),
                                xen_host.timeouts["guest_boot"])
    figures.add("network-attach to NIC in guest", seconds, "s")
    vif = guest.vif(devid=1)
    assert bridge_of(xen_host, vif) == BRIDGE, f"the hotplugged {vif} is not on {BRIDGE}"
    assert mac in guest.network_devices(), "xl network-list does not show the new vif"

    guest.network_detach(mac)
    xen_host.wait_for(f"{mac} gone from the guest",
                      lambda: mac not in guest.interfaces().values(),
                      xen_host.timeouts["guest_boot"])
    assert mac not in guest.network_devices(), "xl network-list still shows the vif"
    assert wait_gone(xen_host, vif, xen_host.timeouts["leak_settle"]), \
        f"{vif} is still in dom0 after network-detach"
    assert guest.answers_ping(), "the guest's first NIC stopped working"
