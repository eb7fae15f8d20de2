"""Harness self-test scenario, run by tests/e2e/test_consoles.py last in its session
(its file name does not start with test_, so only an explicit path collects it).

vlab2's console is its BMC's Serial-over-LAN, carrying Xen's console on COM2. dom0
crashes (sysrq c): the crash, seen through SOL only, must end the test on the host at
once, failed with the crash as its message.
"""

from __future__ import annotations

from harness.plugin import BootedHosts


def test_dom0_crash_seen_through_sol(booted_hosts: BootedHosts) -> None:
    host = booted_hosts.get("vlab2")
    host.run("nohup sh -c 'sleep 2; echo c > /proc/sysrq-trigger' >/dev/null 2>&1 &")
    host.sleep(600)  # a procedure step on the host; the crash on its console ends it
