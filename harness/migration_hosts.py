"""Hosts for migration: pairing dom0s so `xl migrate` works between them, and what
their Xen supports.

Pairing: every dom0 of a pair trusts every other's (and its own) root SSH key, knows
their host keys (pinned from the lab file) and resolves their lab names to their link
addresses, so `xl migrate GUEST PEER` works (xl runs `ssh PEER xl migrate-receive`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from .errors import ConfigError, InfrastructureError
from .host import Host
from .xl import parse_xl_info

PEER_MARK = "xen-hil-migration-peer"  # ends the lines the harness adds to /etc/hosts
DOM0_KEY = "/root/.ssh/id_ed25519"
SSH_CLIENT_CONFIG = "/etc/ssh/ssh_config.d/xenhil-migration.conf"  # Debian includes it


def pair_hosts(hosts: Sequence[Host]) -> None:
    """Let the dom0s of `hosts` `xl migrate` to each other and to themselves (idempotent);
    each one then proves it can SSH to every name in batch mode."""
    missing = [host.name for host in hosts if host.spec.link_address is None]
    if missing:
        raise ConfigError(f"{', '.join(missing)}: no link_address in the lab file; "
                          "migration goes over the host-to-host link")
    peers = [(host.name, str(host.spec.link_address)) for host in hosts]
    public_keys = [host.run(keygen_command(host.name)).stdout.strip() for host in hosts]
    for host in hosts:
        host.run(pairing_script(peers, public_keys, _known_hosts(host, hosts)))
    for host in hosts:
        for peer in ["localhost", *(h.name for h in hosts)]:
            result = host.run(ssh_check_command(peer), check=False)
            if not result.ok:
                raise InfrastructureError(
                    f"{host.name}: root cannot SSH to {peer} after pairing (needed by xl "
                    f"migrate): {(result.stderr or result.stdout).strip()}")


def keygen_command(name: str) -> str:
    """Make dom0's root key unless it has one; print its public half."""
    return (f"test -f {DOM0_KEY} || ssh-keygen -q -t ed25519 -N '' "
            f"-C {shlex.quote(f'xenhil-{name}')} -f {DOM0_KEY}; cat {DOM0_KEY}.pub")


def ssh_check_command(peer: str) -> str:
    return f"ssh -o BatchMode=yes -o ConnectTimeout=20 {shlex.quote(peer)} true"


# Shell quoting does not stop a name from adding lines or fields to /etc/hosts,
# known_hosts or the ssh config: blanks and these characters would.
NOT_IN_NAMES = '#,"*?!\\'


def _one_line_word(value: str, what: str) -> None:
    if not value or any(c.isspace() or c in NOT_IN_NAMES for c in value):
        raise ConfigError(f"{what} {value!r}: not usable in /etc/hosts and ssh files "
                          f"(empty, or has blanks or one of {NOT_IN_NAMES})")


def pairing_script(peers: Sequence[tuple[str, str]], public_keys: Sequence[str],
                   known_hosts: Sequence[tuple[str, str]]) -> str:
    """The shell script that pairs one dom0: `peers` (name, link address) into
    /etc/hosts and the ssh client config, `public_keys` authorized, `known_hosts`
    ((names, `type key`)) known."""
    for name, address in peers:
        _one_line_word(name, "host name")
        _one_line_word(address, "link_address")
    etc_hosts = "".join(f"{address} {name} # {PEER_MARK}\n" for name, address in peers)
    known = "".join(f"{names} {' '.join(key.split())} {PEER_MARK}\n"
                    for names, key in known_hosts)
    script = [
        "mkdir -p -m 700 /root/.ssh",
        "touch /root/.ssh/authorized_keys /root/.ssh/known_hosts",
        *(f"grep -qxF {shlex.quote(key)} /root/.ssh/authorized_keys || "
          f"echo {shlex.quote(key)} >> /root/.ssh/authorized_keys"
          for key in (" ".join(text.split()) for text in public_keys)),  # one line each
        f"sed -i '/ {PEER_MARK}$/d' /etc/hosts /root/.ssh/known_hosts",
        f"printf '%s' {shlex.quote(etc_hosts)} >> /etc/hosts",
        f"printf '%s' {shlex.quote(known)} >> /root/.ssh/known_hosts",
        f"printf '%s' {shlex.quote(_ssh_client_config([name for name, _ in peers]))} "
        f"> {SSH_CLIENT_CONFIG}",
    ]
    return " && ".join(script)


def _ssh_client_config(names: Sequence[str]) -> str:
    # A peer that dies mid-migration is noticed in ~15 s, not after TCP's retries (minutes).
    return (f"# xen-hil: migration peers (harness/migration_hosts.py)\n"
            f"Host localhost {' '.join(names)}\n"
            f"    BatchMode yes\n"
            f"    ServerAliveInterval 5\n"
            f"    ServerAliveCountMax 3\n")


def keyscan_command(address: str) -> str:
    return f"ssh-keyscan -t ed25519 {shlex.quote(address)}"


def _known_hosts(host: Host, hosts: Sequence[Host]) -> list[tuple[str, str]]:
    """(names, `type key`) for known_hosts on `host`: every host of the pair, itself
    also as localhost. Keys pinned in the lab file, else asked from the host itself."""
    entries = []
    for peer in hosts:
        names = f"{peer.name},{peer.spec.link_address}"
        if peer is host:
            names += ",localhost,127.0.0.1"
        key_file = peer.spec.ssh.host_key_file
        if key_file is not None:
            key = " ".join(key_file.read_text().split()[:2])
        else:
            scan = host.run(keyscan_command(str(peer.spec.link_address))).stdout
            key = " ".join(scan.split()[1:3])
        entries.append((names, key))
    return entries


def can_log_dirty_pv(virt_caps: str) -> bool:
    """`xl info`'s virt_caps lists shadow paging (PV log-dirty needs it)."""
    return "shadow" in virt_caps.split()


def live_migration_unsupported(host: Host) -> str | None:
    """Why this Xen cannot live-migrate PV guests, or None. Live migration tracks the
    pages a guest dirties (log-dirty); for PV guests that is shadow paging, which a
    build without CONFIG_SHADOW_PAGING lacks (Debian's 4.17.7+13-0+deb12u1: `xl
    migrate` fails with "Failed to enable logdirty")."""
    caps = parse_xl_info(host.run("xl info").stdout).get("virt_caps", "")
    if can_log_dirty_pv(caps):
        return None
    return (f"{host.name}: this Xen has no shadow paging (xl info virt_caps: {caps!r}; "
            "built without CONFIG_SHADOW_PAGING), which live migration of PV guests needs "
            "for log-dirty tracking")


def usage_options(usage: str) -> set[str]:
    """The options an `xl help COMMAND` usage lists, without dashes, `-` in long names
    read as `_`: e.g. {"h", "C", "debug", "max_iters"}."""
    return {name.replace("-", "_")
            for name in re.findall(r"^\s*--?([A-Za-z][A-Za-z_-]*)", usage, re.MULTILINE)}
