"""What the networking scenarios share."""

from __future__ import annotations

import pytest

from harness.guests.config import GUEST_NETWORK_OPTIONS, NetworkOrSkip, lab_guest_network
from harness.host import Host


@pytest.fixture
def guest_network_or_skip() -> NetworkOrSkip:
    """`guest_network_or_skip(host, "route"|"nat")`: the lab's network for the host's
    routed or NAT guests; the test skips, naming the option, where there is none."""

    def lookup(host: Host, network: str) -> str:
        value = lab_guest_network(host, network)
        if value is None:
            pytest.skip(f"{host.name} has no {GUEST_NETWORK_OPTIONS[network]} in the lab file")
        return str(value)

    return lookup
