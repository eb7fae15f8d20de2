"""Routed networking (vif-route): each guest behind a host route in dom0.

Procedure: vif-route gives the vif dom0's eth0 address, routes the guest's address to
it and answers ARP for dom0 (proxy ARP); dom0 forwards (what Xen's network-route
does). The guest talks to dom0, to another routed guest on its host, and to a routed
guest on the other host, whose network the dom0s route to each other over the
host-to-host link. 100 pings at 0.2 s, under 1 % loss each; a guest pings its two
peers on one host at once.
"""

from __future__ import annotations

import pytest

from harness.figures import Figures
from harness.guests.config import NetworkOrSkip, route_gateway
from harness.guests.guest import GuestFactory
from harness.host import Host
from harness.network import check_pings, forwarding, routes, wait_gone

pytestmark = pytest.mark.area("networking")


def test_routed_guests_talk_to_dom0_and_each_other(
        xen_host: Host, guests: GuestFactory, figures: Figures,
        guest_network_or_skip: NetworkOrSkip) -> None:
    guest_network_or_skip(xen_host, "route")
    with forwarding(xen_host):
        first, second = guests.on_each(xen_host, xen_host, network="route")
        vif = first.vif()
        route = xen_host.run(f"ip route get {first.ip}").stdout
        assert f"dev {vif}" in route, f"dom0 does not route {first.ip} to {vif}: {route}"
        check_pings(first, {"routed guest -> dom0": route_gateway(xen_host),
                            "routed guest -> routed guest, same host": second.ip}, figures)
        first.destroy()
        assert wait_gone(xen_host, vif, xen_host.timeouts["leak_settle"]), \
            f"{vif} is still in dom0 after the guest was destroyed"
        leftover = xen_host.run(f"ip route show {first.ip}").stdout.strip()
        assert not leftover, f"the route to the destroyed guest is still there: {leftover}"


def test_routed_guests_on_two_hosts_talk(xen_host_pair: tuple[Host, Host],
                                         guests: GuestFactory, figures: Figures,
        guest_network_or_skip: NetworkOrSkip) -> None:
    here, there = xen_host_pair
    here_net = guest_network_or_skip(here, "route")
    there_net = guest_network_or_skip(there, "route")
    if not (here.spec.link_address and there.spec.link_address):
        pytest.skip("the dom0s route to each other's guests over their link_address: "
                    "the lab file gives none")
    with forwarding(here, there), \
            routes(here, there.spec.link_address, [there_net]), \
            routes(there, here.spec.link_address, [here_net]):
        local, remote = guests.on_each(here, there, network="route")
        check_pings(local, {f"routed guest on {here.name} -> routed guest on {there.name}":
                            remote.ip}, figures)
