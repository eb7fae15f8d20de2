"""Harness self-test scenario, run by tests/e2e/test_consoles.py after the boot profile
on both hosts (its file name does not start with test_, so only an explicit path
collects it).

A migration pairing (harness.migration_hosts.paired, what the host_pair fixture does
around every two-host migration test) leaves nothing on either dom0: the files where
SSH trust and names live are read whole before, during and after it, so a trace the
harness does not mark as its own counts too.
"""

from __future__ import annotations

from harness.host import Host
from harness.migration_hosts import paired

# Where a pairing puts trust and names: files read whole, directories listed (no times:
# unpairing rewrites authorized_keys with the same content).
TRUST_FILES = ("/etc/hosts", "/root/.ssh/authorized_keys", "/root/.ssh/known_hosts")
TRUST_DIRS = ("/root/.ssh", "/etc/ssh/ssh_config.d")


def ssh_trust(host: Host) -> str:
    return host.run(f"for f in {' '.join(TRUST_FILES)}; do echo \"== $f\"; cat \"$f\" 2>&1; "
                    f"done; ls -lAR --time-style=+ {' '.join(TRUST_DIRS)}", check=False).stdout


def test_migration_pairing_leaves_no_trace(xen_host_pair: tuple[Host, Host]) -> None:
    hosts = xen_host_pair
    before = {host.name: ssh_trust(host) for host in hosts}
    with paired(hosts):
        source, destination = hosts
        peer = source.run(f"ssh {destination.name} hostname").stdout
        assert peer == destination.run("hostname").stdout
        during = {host.name: ssh_trust(host) for host in hosts}
    after = {host.name: ssh_trust(host) for host in hosts}
    for host in hosts:
        assert during[host.name] != before[host.name], f"{host.name}: the pairing showed nowhere"
        assert after[host.name] == before[host.name], f"{host.name}: the pairing left a trace"
