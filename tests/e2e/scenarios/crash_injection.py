"""Harness self-test scenarios, run by tests/e2e/test_run.py in a pytest of their own
against the virtual lab (never part of a user profile; the file name does not start
with test_, so only an explicit path collects it).

1. dom0 is crashed through sysrq while the test waits for something that never
   happens: the wait must fail within seconds, as a product failure, with the panic
   in the evidence, not when its 10-minute timeout runs out.
2. The next test gets the host back: recovered by a power cycle into Xen.
"""

from __future__ import annotations

from harness.host import Host


def test_dom0_crash_fails_the_waiting_test(xen_host: Host) -> None:
    # Crash dom0 a moment after this command returns, while the wait below runs.
    xen_host.run("nohup sh -c 'sleep 3; echo c > /proc/sysrq-trigger' >/dev/null 2>&1 &")
    xen_host.wait_for("something that never happens", lambda: False, timeout=600)


def test_host_recovered_after_the_crash(xen_host: Host) -> None:
    assert xen_host.run("xl info").ok
    assert xen_host.run("cat /proc/xen/capabilities").stdout.strip() == "control_d"
