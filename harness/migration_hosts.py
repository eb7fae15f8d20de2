"""Hosts for migration: pairing dom0s so `xl migrate` works between them, and what
their Xen supports.

Pairing: every dom0 of a pair trusts every other's root SSH key, knows their host keys
(pinned or known to the lab) and resolves their lab names to their link addresses, so
`xl migrate GUEST PEER` works (xl runs `ssh PEER xl migrate-receive`). A local
migration needs none of it (harness.migration.migrate_command). It lasts one test
(`paired`): a build that takes over one dom0 must not keep root on the other in later
runs. Its keys, known_hosts and ssh client config are files of its own; its lines in
/etc/hosts and authorized_keys end with PEER_MARK. Unpairing removes all of it, and the
leak check verifies that nothing is left.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shlex
from collections.abc import Iterator, Sequence

from .build import XenBuild
from .errors import ConfigError, InfrastructureError
from .guests.dom0 import device_model_missing
from .host import Host
from .host_keys import known_hosts_name, trusted_keys
from .leaks import LeakCheck
from .remote import SSHUnavailable
from .side_by_side import on_each_host
from .xl import parse_xl_info

log = logging.getLogger(__name__)

PEER_MARK = "xen-hil-migration-peer"  # ends the lines the harness adds to /etc/hosts
AUTHORIZED_KEYS = "/root/.ssh/authorized_keys"
KNOWN_HOSTS = "/root/.ssh/known_hosts"  # earlier versions added marked lines here
# The pairing's own files: its key, the peers' host keys, a note that it made
# authorized_keys (so that unpairing removes it again).
TRUST_DIR = "/root/.ssh/xenhil-migration"
TRUST_KEY = f"{TRUST_DIR}/id_ed25519"
TRUST_KNOWN_HOSTS = f"{TRUST_DIR}/known_hosts"
MADE_AUTHORIZED_KEYS = f"{TRUST_DIR}/made-authorized_keys"
SSH_CLIENT_CONFIG = "/etc/ssh/ssh_config.d/xenhil-migration.conf"  # Debian includes it
# What of a pairing can be left on a host, for the leak check: its marked lines, its
# files, and authorized_keys (which it may have made).
TRUST_SNAPSHOT = f"""
echo '## migration trust'
grep -sH ' {PEER_MARK}$' /etc/hosts {AUTHORIZED_KEYS} {KNOWN_HOSTS}
ls -d {TRUST_DIR} {SSH_CLIENT_CONFIG} {AUTHORIZED_KEYS} 2>/dev/null
true
"""


@contextlib.contextmanager
def paired(hosts: Sequence[Host]) -> Iterator[None]:
    """`hosts` paired (`pair_hosts`) for the body, unpaired afterwards; then Leaked if
    any trace of the pairing is left on one of them."""
    trust = LeakCheck(TRUST_SNAPSHOT, after="their pairing for migration was removed",
                      settles=False)
    trust.watch(*hosts)
    try:
        pair_hosts(hosts)
        yield
    finally:
        for unreached in unpair_hosts(hosts, reachable_only=True):
            trust.before.pop(unreached.name)  # nothing removed there, nothing to verify
        trust.verify()


def pair_hosts(hosts: Sequence[Host]) -> None:
    """Let the dom0s of `hosts` `xl migrate` to each other, with fresh keys (a pairing
    left over is replaced); each one then proves it can SSH to every peer in batch
    mode."""
    missing = [host.name for host in hosts if host.spec.link_address is None]
    if missing:
        raise ConfigError(f"{', '.join(missing)}: no link_address in the lab file; "
                          "migration goes over the host-to-host link")
    # Each step is a few programs on each dom0 (a second under TCG), the check a whole
    # SSH handshake: the hosts do each step side by side.
    deadline = _step_deadline(hosts)
    public_keys = on_each_host(hosts, lambda host: host.run(keygen_command()).stdout,
                               deadline, "pairing")
    peers_of = {host.name: [other for other in hosts if other is not host] for host in hosts}

    def pair(host: Host) -> None:
        peers = peers_of[host.name]
        host.run(pairing_script([(peer.name, str(peer.spec.link_address)) for peer in peers],
                                [(peer.name, public_keys[peer.name]) for peer in peers],
                                _known_hosts(peers)))

    on_each_host(hosts, pair, deadline, "pairing")
    on_each_host(hosts, lambda host: _check_peers(host, peers_of[host.name]),
                 len(hosts) * deadline, "pairing check")


def _step_deadline(hosts: Sequence[Host]) -> float:
    """What one step of pairing or unpairing may take on the hosts side by side."""
    return 3 * max((host.timeouts["command"] for host in hosts), default=0.0)


def _check_peers(host: Host, peers: Sequence[Host]) -> None:
    for peer in peers:
        result = host.run(ssh_check_command(peer.name), check=False)
        if not result.ok:
            raise InfrastructureError(
                f"{host.name}: root cannot SSH to {peer.name} after pairing (needed by xl "
                f"migrate): {(result.stderr or result.stdout).strip()}")


def unpair_hosts(hosts: Sequence[Host], *, reachable_only: bool = False) -> list[Host]:
    """Remove every trace of a pairing from `hosts`. With `reachable_only`, a host that
    is down (crashed, hung, no SSH) is left alone and returned: its next pairing
    removes the traces first."""
    def unpair(host: Host) -> bool:
        if reachable_only and host.health.current is not None:
            return False
        try:
            host.run(unpairing_script())
        except SSHUnavailable as error:
            if not reachable_only:
                raise
            log.warning("%s: migration pairing not removed, the host does not answer: %s",
                        host.name, error)
            return False
        return True

    unpaired = on_each_host(hosts, unpair, _step_deadline(hosts), "unpairing")
    return [host for host in hosts if not unpaired[host.name]]


def keygen_command() -> str:
    """Make a new key for the pairing; print its public half."""
    return (f"mkdir -p -m 700 /root/.ssh {TRUST_DIR} && rm -f {TRUST_KEY} {TRUST_KEY}.pub && "
            f"ssh-keygen -q -t ed25519 -N '' -C {PEER_MARK} -f {TRUST_KEY} && "
            f"cat {TRUST_KEY}.pub")


def ssh_check_command(peer: str) -> str:
    return f"ssh -o BatchMode=yes -o ConnectTimeout=20 {shlex.quote(peer)} true"


# Shell quoting does not stop a name from adding lines or fields to /etc/hosts,
# known_hosts or the ssh config: blanks and these characters would.
NOT_IN_NAMES = '#,"*?!\\'


def _one_line_word(value: str, what: str) -> None:
    if not value or any(c.isspace() or c in NOT_IN_NAMES for c in value):
        raise ConfigError(f"{what} {value!r}: not usable in /etc/hosts and ssh files "
                          f"(empty, or has blanks or one of {NOT_IN_NAMES})")


def pairing_script(peers: Sequence[tuple[str, str]], public_keys: Sequence[tuple[str, str]],
                   known_hosts: Sequence[tuple[str, str]]) -> str:
    """The shell script that pairs one dom0: `peers` (name, link address) into
    /etc/hosts and the ssh client config, `public_keys` ((host name, public key))
    authorized, `known_hosts` ((names, `type key`)) known. A pairing left over is
    replaced."""
    for name, address in peers:
        _one_line_word(name, "host name")
        _one_line_word(address, "link_address")
    etc_hosts = "".join(f"{address} {name} # {PEER_MARK}\n" for name, address in peers)
    authorized = "".join(f"{' '.join(key.split()[:2])} {name} {PEER_MARK}\n"
                         for name, key in public_keys)
    known = "".join(f"{names} {' '.join(key.split()[:2])}\n" for names, key in known_hosts)
    script = [
        f"mkdir -p -m 700 /root/.ssh {TRUST_DIR}",
        f"{{ test -e {AUTHORIZED_KEYS} || touch {MADE_AUTHORIZED_KEYS}; }}",
        f"touch {AUTHORIZED_KEYS}",
        f"sed -i '/ {PEER_MARK}$/d' /etc/hosts {AUTHORIZED_KEYS}",
        f"printf '%s' {shlex.quote(authorized)} >> {AUTHORIZED_KEYS}",
        f"printf '%s' {shlex.quote(etc_hosts)} >> /etc/hosts",
        f"printf '%s' {shlex.quote(known)} > {TRUST_KNOWN_HOSTS}",
        f"printf '%s' {shlex.quote(_ssh_client_config([name for name, _ in peers]))} "
        f"> {SSH_CLIENT_CONFIG}",
    ]
    return " && ".join(script)


def unpairing_script() -> str:
    """The shell script that removes a pairing from a dom0, every step tried; it fails
    if one did."""
    return "\n".join([
        "failed=0",
        f"sed -i '/ {PEER_MARK}$/d' /etc/hosts || failed=1",
        f"for file in {AUTHORIZED_KEYS} {KNOWN_HOSTS}; do",
        f"    if test -f \"$file\"; then sed -i '/ {PEER_MARK}$/d' \"$file\" || failed=1; fi",
        "done",
        f"if test -e {MADE_AUTHORIZED_KEYS} && ! test -s {AUTHORIZED_KEYS}; then",
        f"    rm -f {AUTHORIZED_KEYS} || failed=1",
        "fi",
        f"rm -rf {TRUST_DIR} {SSH_CLIENT_CONFIG} || failed=1",
        "exit $failed",
    ])


def _ssh_client_config(names: Sequence[str]) -> str:
    # Only the pairing's key and host keys; nothing learnt is written anywhere. A peer
    # that dies mid-migration is noticed in ~15 s, not after TCP's retries (minutes).
    return (f"# xen-hil: migration peers (harness/migration_hosts.py)\n"
            f"Host {' '.join(names)}\n"
            f"    IdentityFile {TRUST_KEY}\n"
            f"    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {TRUST_KNOWN_HOSTS}\n"
            f"    StrictHostKeyChecking yes\n"
            f"    UpdateHostKeys no\n"
            f"    BatchMode yes\n"
            f"    ServerAliveInterval 5\n"
            f"    ServerAliveCountMax 3\n")


def _known_hosts(peers: Sequence[Host]) -> list[tuple[str, str]]:
    """(names, `type key`) for a pairing's known_hosts: each of `peers`, with the keys
    the lab trusts for it."""
    entries = []
    for peer in peers:
        names = f"{peer.name},{peer.spec.link_address}"
        endpoint = peer.spec.ssh
        keys = trusted_keys(endpoint).lookup(known_hosts_name(endpoint.address, endpoint.port))
        if keys is None:
            raise InfrastructureError(f"{peer.name}: the lab trusts no SSH host key for it "
                                      "(ssh_known_hosts, ssh_host_key_file)")
        entries += [(names, f"{key.get_name()} {key.get_base64()}") for key in keys.values()]
    return entries


# Live migration tracks the pages a guest dirties (log-dirty). PV guests need shadow
# paging for it; PVH and HVM guests use HAP's own log-dirty mode, or shadow paging on a
# machine without HAP.
LOG_DIRTY_PAGING = {"pv": ("shadow",), "pvh": ("hap", "shadow"), "hvm": ("hap", "shadow")}
# What a migration scenario runs for unless its `guest_types` mark says otherwise: an HVM
# guest boots for a minute under TCG, so only some scenarios take it on too.
MIGRATION_GUEST_TYPES = ("pv", "pvh")


def can_log_dirty(guest_type: str, virt_caps: str) -> bool:
    """`xl info`'s virt_caps lists a paging mode that tracks `guest_type`'s dirty pages."""
    return not set(LOG_DIRTY_PAGING[guest_type]).isdisjoint(virt_caps.split())


def unmigratable_guest_types(build: XenBuild) -> dict[str, str]:
    """The guest types the build's hypervisor cannot live-migrate, read from its Kconfig
    before any host boots, and why: {"pv": "..."}. A build whose Kconfig is not readable
    is left to the check on the booted host (live_migration_unsupported)."""
    config = build.hypervisor_config()
    if config is None or config.get("CONFIG_SHADOW_PAGING", "n") == "y":
        return {}
    return {"pv": f"{build.label} is built without CONFIG_SHADOW_PAGING, which live "
                  "migration of PV guests needs for log-dirty tracking"}


def live_migration_unsupported(host: Host, guest_type: str) -> str | None:
    """Why this host's Xen cannot live-migrate a `guest_type` guest, or None."""
    caps = parse_xl_info(host.run("xl info").stdout).get("virt_caps", "")
    if can_log_dirty(guest_type, caps):
        return device_model_missing(host) if guest_type == "hvm" else None
    paging = " or ".join(f"{mode} paging" for mode in LOG_DIRTY_PAGING[guest_type])
    return (f"{guest_type.upper()} guests: {host.name}'s Xen has no {paging} (xl info "
            f"virt_caps: {caps!r}), which their live migration needs for log-dirty tracking")


def usage_options(usage: str) -> set[str]:
    """The options an `xl help COMMAND` usage lists, without dashes, `-` in long names
    read as `_`: e.g. {"h", "C", "debug", "max_iters"}."""
    return {name.replace("-", "_")
            for name in re.findall(r"^\s*--?([A-Za-z][A-Za-z_-]*)", usage, re.MULTILINE)}
