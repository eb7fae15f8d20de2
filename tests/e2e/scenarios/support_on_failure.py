"""Harness self-test scenarios for support bundles on failure, run by
tests/e2e/test_run.py in the session of the other self-test scenarios (the file name
does not start with test_, so only an explicit path collects it).

1. A test fails on purpose after using its host: the report links a support bundle of
   that host, collected, checked and unpacked under reports/<run-id>/support/<host>/.
2. The next test fails too (same burst of failures): it links the same bundle instead
   of collecting another one.
"""

from __future__ import annotations

from harness.host import Host


def test_deliberate_failure_leaves_a_support_bundle(xen_host: Host) -> None:
    assert xen_host.run("xl info").ok
    raise AssertionError("deliberate failure: its report must link a support bundle")


def test_second_failure_of_the_burst_links_the_same_bundle(xen_host: Host) -> None:
    # xen_host: the failure dump before it (debug key d prints a `Xen call trace`)
    # must not have made the host look crashed (no power cycle: one burst).
    assert xen_host.run("xl list").ok
    raise AssertionError("deliberate failure: the burst's bundle is linked, not collected")
