"""NAT networking (vif-nat): guests on a private network behind dom0.

Procedure: vif-nat gives the vif the guest's address + 127 (the guest's router) and a
host route to the guest; dom0 forwards and masquerades the guests' network on its way
out (what Xen's network-nat does). The guest talks to its router and to another NAT
guest on the host; a TCP connection to the other host's dom0 must arrive from this
dom0's address, not the guest's. 100 pings at 0.2 s, under 1 % loss each; a guest
pings its two peers at once.
"""

from __future__ import annotations

import pytest

from harness.figures import Figures
from harness.guests.config import BRIDGE, NetworkOrSkip
from harness.guests.guest import GuestFactory
from harness.host import Host
from harness.network import check_pings, forwarding, masquerade, measure_transfer

pytestmark = pytest.mark.area("networking")


def test_nat_guests_talk_to_dom0_and_each_other(
        xen_host: Host, guests: GuestFactory, figures: Figures,
        guest_network_or_skip: NetworkOrSkip) -> None:
    guest_network_or_skip(xen_host, "nat")
    with forwarding(xen_host):
        first, second = guests.on_each(xen_host, xen_host, network="nat")
        assert first.config.gateway is not None
        check_pings(first, {"NAT guest -> its router in dom0": first.config.gateway,
                            "NAT guest -> NAT guest, same host": second.ip}, figures)


def test_nat_guest_reaches_the_other_host_as_dom0(xen_host_pair: tuple[Host, Host],
                                                  guests: GuestFactory, figures: Figures,
        guest_network_or_skip: NetworkOrSkip) -> None:
    here, there = xen_host_pair
    private = guest_network_or_skip(here, "nat")
    if not there.spec.link_address or not here.spec.link_address:
        pytest.skip("needs the hosts' link_address in the lab file")
    with forwarding(here), masquerade(here, private, BRIDGE):
        guest = guests(on=here, network="nat")
        transfer = measure_transfer(guest, there, there.spec.link_address,
                                    f"NAT guest on {here.name} -> dom0 of {there.name} TCP",
                                    figures)
    assert transfer.peer == here.spec.link_address, \
        f"{there.name} saw the connection come from {transfer.peer}, not from " \
        f"{here.name}'s {here.spec.link_address}: no NAT"
