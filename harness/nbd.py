"""Storage that two hosts see: a file exported by nbd-server on one host, attached with
nbd-client as the same /dev/nbdN on every host (a migrated guest's disk names the same
device on the destination). Exported on the host-to-host link only; made and removed by
the test that needs it.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Sequence

from .errors import ConfigError, InfrastructureError
from .host import Host

log = logging.getLogger(__name__)

IMAGES_DIR = "/var/lib/xen/images/xenhil"
NBD_PORT = 10809  # the NBD protocol's registered port
MAX_NBD_DEVICES = 16  # the nbd module's default nbds_max


def free_nbd_indexes(sys_block_listing: str) -> set[int]:
    """Indexes N of /dev/nbdN that are not connected, from the output of
    `for d in /sys/block/nbd*; do echo $d $(cat $d/size); done` (size 0: free)."""
    free = set()
    for line in sys_block_listing.splitlines():
        match = re.fullmatch(r"\S*/nbd(\d+) (\d+)", line.strip())
        if match and match.group(2) == "0":
            free.add(int(match.group(1)))
    return free


class SharedDisk:
    """A raw disk image on `server`, attached as the same /dev/nbdN on each of `hosts`."""

    def __init__(self, name: str, server: Host, hosts: Sequence[Host], size_mb: int) -> None:
        if server.spec.link_address is None:
            raise ConfigError(f"{server.name}: no link_address in the lab file; NBD is "
                              "exported on the host-to-host link")
        self.name = name
        self.server = server
        self.hosts = list(hosts)
        self.size_mb = size_mb
        self.image = f"{IMAGES_DIR}/shared-{name}.img"
        self.config = f"/run/xenhil-nbd-{name}.conf"
        self.pidfile = f"/run/xenhil-nbd-{name}.pid"
        self.device: str | None = None
        self._attached: list[Host] = []

    def __enter__(self) -> SharedDisk:
        self.create()
        return self

    def __exit__(self, *_: object) -> None:
        self.remove()

    def create(self) -> None:
        """Export the image and attach it on every host."""
        server = self.server
        address = str(server.spec.link_address)
        log.info("%s: exporting %d MiB over NBD as %s", server.name, self.size_mb, self.name)
        server.run(export_command(self.name, address, self.image, self.config, self.pidfile,
                                  self.size_mb))
        index = self._common_free_index()
        self.device = f"/dev/nbd{index}"
        for host in self.hosts:
            host.run(attach_command(address, self.device, self.name))
            self._attached.append(host)
            size = int(host.run(f"blockdev --getsize64 {shlex.quote(self.device)}").stdout)
            if size != self.size_mb << 20:
                raise InfrastructureError(f"{host.name}: {self.device} has {size} bytes, "
                                          f"the export {self.size_mb} MiB")
        log.info("%s attached as %s on %s", self.name, self.device,
                 ", ".join(host.name for host in self.hosts))

    def _common_free_index(self) -> int:
        free: set[int] | None = None
        for host in self.hosts:
            listing = host.run(
                "modprobe nbd && for d in /sys/block/nbd*; do echo $d $(cat $d/size); done"
            ).stdout
            free = free_nbd_indexes(listing) if free is None else free & free_nbd_indexes(
                listing)
        if not free:
            raise InfrastructureError(
                f"no /dev/nbdN free on all of {', '.join(h.name for h in self.hosts)} "
                f"(the nbd module has {MAX_NBD_DEVICES} by default): disconnect stale ones "
                "with `nbd-client -d /dev/nbdN`")
        return min(free)

    def remove(self) -> None:
        """Detach everywhere, stop the server, delete the image; the first problem is
        raised after every step was tried."""
        problems = []
        for host in self._attached:
            result = host.run(f"nbd-client -d {shlex.quote(str(self.device))}", check=False)
            if not result.ok:
                problems.append(f"{host.name}: nbd-client -d {self.device}: "
                                f"{(result.stderr or result.stdout).strip()}")
        self._attached.clear()
        result = self.server.run(stop_command(self.pidfile, self.config, self.image),
                                 check=False)
        if not result.ok:
            problems.append(f"{self.server.name}: stopping nbd-server: "
                            f"{(result.stderr or result.stdout).strip()}")
        if problems:
            raise InfrastructureError("shared disk not cleaned up: " + "; ".join(problems))


def _config_word(value: str, what: str) -> str:
    # nbd-server's config is line based: a blank or bracket in a value could make a
    # line or section of its own.
    if not value or any(c.isspace() or c in "[]" for c in value):
        raise ConfigError(f"NBD {what} {value!r}: empty, or has blanks or brackets")
    return value


def export_config(name: str, listen_address: str, image: str) -> str:
    """nbd-server's config: the one export, listening on `listen_address` only."""
    return (f"[generic]\nuser = root\ngroup = root\n"
            f"listenaddr = {_config_word(listen_address, 'listen address')}\n"
            f"port = {NBD_PORT}\n"
            f"[{_config_word(name, 'export name')}]\nexportname = {_config_word(image, 'image')}\n")


def export_command(name: str, listen_address: str, image: str, config: str, pidfile: str,
                   size_mb: int) -> str:
    """Make the image, write the config and start nbd-server on the server."""
    return (f"mkdir -p {IMAGES_DIR} && truncate -s {int(size_mb)}M {shlex.quote(image)} && "
            f"printf '%s' {shlex.quote(export_config(name, listen_address, image))} "
            f"> {shlex.quote(config)} && "
            f"nbd-server -C {shlex.quote(config)} -p {shlex.quote(pidfile)}")


def attach_command(address: str, device: str, name: str) -> str:
    return (f"nbd-client {shlex.quote(address)} {NBD_PORT} {shlex.quote(device)} "
            f"-N {shlex.quote(name)}")


def stop_command(pidfile: str, config: str, image: str) -> str:
    pid = shlex.quote(pidfile)
    return (f"[ -e {pid} ] && kill $(cat {pid}); "
            f"rm -f {pid} {shlex.quote(config)} {shlex.quote(image)}")
