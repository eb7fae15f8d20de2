"""Harness self-test scenarios for guests and networking, run by tests/e2e/test_run.py
in a pytest of their own against the virtual lab (never part of a user profile).

1. A vif pointed at a bridge that does not exist: the test must fail (a product
   failure: the toolstack refused the guest) with the hotplug script's error in its
   message and the hotplug logs in its evidence.
2. A test that leaks a domain and a vif device past its guests' cleanup: the leak
   check must fail it, naming both.
3. Cleanup of what scenario 2 leaked (the leak check leaves leaks for inspection).
"""

from __future__ import annotations

import dataclasses

import pytest

from harness.guests.guest import CONFIG_DIR, GuestFactory
from harness.host import Host

LEAKED_DOMAIN = "xenhil-leaked"
LEAKED_VIF = "vif999.9"


def test_vif_on_a_missing_bridge_fails_with_the_hotplug_error(
        xen_host: Host, guests: GuestFactory) -> None:
    guests(on=xen_host, bridge="xenbr-missing")


def test_leaked_domain_and_vif_fail_the_test(xen_host: Host, monkeypatch: pytest.MonkeyPatch,
                                            guests: GuestFactory) -> None:
    # These leaks never settle: waiting the table's minute for them would show nothing
    # more. (The guests fixture checks for leaks before monkeypatch undoes this.)
    monkeypatch.setattr(xen_host, "timeouts", dataclasses.replace(
        xen_host.timeouts, overrides=(*xen_host.timeouts.overrides, ("leak_settle", 2.0))))
    guest = guests(on=xen_host)
    # A second domain the factory does not know of, from the guest's own config.
    xen_host.run(f"sed -e 's/^name = .*/name = \"{LEAKED_DOMAIN}\"/' -e '/^vif/d' "
                 f"{guest.config_path} > {CONFIG_DIR}/{LEAKED_DOMAIN}.cfg && "
                 f"xl create {CONFIG_DIR}/{LEAKED_DOMAIN}.cfg")
    xen_host.run(f"ip link add {LEAKED_VIF} type dummy")


def test_clean_up_the_leaks(xen_host: Host) -> None:
    assert LEAKED_DOMAIN in xen_host.run("xl list").stdout, "the leaked domain is gone"
    xen_host.run(f"xl destroy {LEAKED_DOMAIN}; ip link del {LEAKED_VIF}; "
                 f"rm -f {CONFIG_DIR}/{LEAKED_DOMAIN}.cfg")
