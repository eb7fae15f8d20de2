"""Harness self-test scenarios: faults a nightly run must survive, run by
tests/e2e/test_run.py at the end of the self-test session (the file name does not start
with test_, so only an explicit path collects it). Without --hosts: one-host scenarios
run on vlab1, and vlab2 is the host whose BMC dies.

1. dom0 crashes while a guest is being created: the test fails at once, the crash its
   message; the next test gets the host back (power cycle into Xen).
2. The host's machine freezes (QEMU stopped) while a command runs in a guest: the test
   fails "host hung" within the hang timeout; the next test gets the host back.
3. vlab2's BMC is killed: the test using vlab2 is BROKEN naming the BMC, the next one on
   vlab2 is BROKEN at once, and vlab1 still runs its test. vlab2 stays powered off: the
   BMC is polled whether or not its host is up, and booting it would only cost a minute.

Each injection time is attached ("fault injected", seconds since the epoch) so that
the e2e test can measure how long detection took.
"""

from __future__ import annotations

import os
import signal
import time

import allure

from harness.guests.guest import GuestFactory
from harness.host import Host
from harness.plugin import XenhilRun
from harness.vlab import control


def injected(what: str) -> None:
    allure.attach(f"{time.time():.3f}\n{what}\n", name="fault injected",
                  attachment_type=allure.attachment_type.TEXT)


def virtual_machine(host: Host) -> control.VirtualHost:
    return next(vm for vm in control.virtual_hosts(host.lab) if vm.name == host.name)


def test_dom0_crash_during_guest_creation(xen_host: Host, guests: GuestFactory) -> None:
    # The guest takes 20 s and more to come up under TCG; dom0 crashes 8 s into it.
    xen_host.run("nohup sh -c 'sleep 8; echo c > /proc/sysrq-trigger' >/dev/null 2>&1 &")
    injected("echo c > /proc/sysrq-trigger in 8 s")
    guests(on=xen_host)


def test_host_recovered_after_the_crash(xen_host: Host) -> None:
    assert xen_host.run("cat /proc/xen/capabilities").stdout.strip() == "control_d"


def test_frozen_host_fails_the_test_as_hung(xen_host: Host, guests: GuestFactory) -> None:
    guest = guests(on=xen_host)
    qemu = int(virtual_machine(xen_host).qemu_pid_file.read_text())
    os.kill(qemu, signal.SIGSTOP)  # the machine stops: no SSH, no com1, no error
    injected(f"SIGSTOP to QEMU PID {qemu}")
    guest.run("sleep 1200", timeout=1800)


def test_host_recovered_after_the_hang(xen_host: Host) -> None:
    assert xen_host.run("xl list").ok


def test_dead_bmc_makes_its_host_broken(xenhil: XenhilRun) -> None:
    host = xenhil.hosts["vlab2"]
    bmc = int(virtual_machine(host).bmc_pid_file.read_text())
    os.kill(bmc, signal.SIGKILL)
    injected(f"SIGKILL to ipmi_sim PID {bmc}")
    host.sleep(600)  # a procedure step on the host; the BMC's loss ends it


def test_broken_host_ends_its_next_test_at_once(xenhil: XenhilRun) -> None:
    xenhil.hosts["vlab2"].ensure_shell()


def test_the_other_host_goes_on(xen_host: Host) -> None:
    assert xen_host.run("xl info").ok
