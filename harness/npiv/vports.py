"""The vports block-npiv makes for guests on a ready host: a free name of the lab's
pool for each disk, waiting for the vport and its LUN to come and go, leaks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..errors import InfrastructureError, ProductFailure
from .script import SCRIPTS_DIR, NpivDisk, read_target_fields
from .sysfs import FCHost, FCSysfs, Lun, Vport
from .wwn import NpivConfig, VportName

if TYPE_CHECKING:
    from ..host import Host


def free_vport_name(pool: Iterable[VportName], present: Iterable[Vport]) -> VportName:
    """The first name of the host's pool that no vport on the host uses now."""
    used = {vport.port_name for vport in present}
    pool = list(pool)
    for name in pool:
        if name.wwpn not in used:
            return name
    raise InfrastructureError(f"every WWPN of the vport pool is in use on the host "
                              f"({', '.join(n.wwpn for n in pool)}): leaked vports? delete "
                              "them or add WWPNs to the pool")


def leaked_vports(pool: Iterable[VportName], present: Iterable[Vport]) -> list[Vport]:
    """Vports with a WWPN of the lab's pool that exist although no guest of ours runs."""
    wwpns = {name.wwpn for name in pool}
    return [vport for vport in present if vport.port_name in wwpns]


class NpivFailure(ProductFailure):
    """block-npiv or the FC stack did not do what it promises: a vport that does not
    come, a LUN that does not appear, a vport that stays."""


class NpivHost:
    """A host ready for NPIV guests (its preflight passed): its port, its lab
    parameters, and the disk target layout of its block-npiv."""

    def __init__(self, host: Host, config: NpivConfig, port: FCHost,
                 sysfs: FCSysfs | None = None, scripts_dir: str = SCRIPTS_DIR) -> None:
        self.host = host
        self.config = config
        self.port = port
        self.sysfs = sysfs or FCSysfs(host)
        self.fields = read_target_fields(host, scripts_dir)

    def disk(self, lun: int | None = None) -> NpivDisk:
        """A disk of the lab's target, through a vport name of the host's pool that is
        not in use on the host now."""
        name = free_vport_name(self.config.vport_pool, self.sysfs.vports())
        return NpivDisk(vport=name, target_wwpn=self.config.target_wwpn,
                        lun=self.config.luns[0] if lun is None else lun,
                        fabric_name=self.config.fabric_name)

    def vports_in_use(self) -> int | None:
        port = next((p for p in self.sysfs.fc_hosts() if p.name == self.port.name), None)
        return port.npiv_vports_inuse if port is not None else None

    def leaked(self) -> list[Vport]:
        return leaked_vports(self.config.vport_pool, self.sysfs.vports())

    def wait_vport_active(self, wwpn: str) -> Vport:
        found: list[Vport] = []

        def active() -> bool:
            vport = self.sysfs.vport(wwpn)
            found[:] = [vport] if vport is not None else []
            return vport is not None and vport.active and vport.scsi_host is not None

        timeout = self.host.timeouts["npiv_vport"]
        try:
            self.host.wait_for(f"vport {wwpn} Active", active, timeout, interval=2)
        except TimeoutError:
            state = (f"it is {found[0].vport_state!r} ({found[0].name})" if found
                     else "it is not in fc_vports")
            raise NpivFailure(f"{self.host.name}: vport {wwpn} not Active within "
                              f"{timeout:.0f} s: {state}") from None
        return found[0]

    def wait_lun(self, vport: Vport, lun: int) -> Lun:
        assert vport.scsi_host is not None
        found: list[Lun] = []

        def visible() -> bool:
            hit = self.sysfs.find_lun(vport.scsi_host or "", self.config.target_wwpn, lun)
            found[:] = [hit] if hit is not None and hit.block else []
            return bool(found)

        timeout = self.host.timeouts["npiv_lun"]
        try:
            self.host.wait_for(f"LUN {lun} on {vport.scsi_host}", visible, timeout, interval=2)
        except TimeoutError:
            seen = ", ".join(f"{s.address} target {s.target_wwpn} {s.block}"
                             for s in self.sysfs.luns(vport.scsi_host))
            raise NpivFailure(
                f"{self.host.name}: LUN {lun} behind target {self.config.target_wwpn} not "
                f"visible on {vport.scsi_host} ({vport.name}) within {timeout:.0f} s; it "
                f"sees: {seen or 'nothing'}") from None
        return found[0]

    def wait_vport_gone(self, wwpn: str) -> None:
        timeout = self.host.timeouts["npiv_vport_gone"]
        try:
            self.host.wait_for(f"vport {wwpn} gone", lambda: self.sysfs.vport(wwpn) is None,
                               timeout, interval=2)
        except TimeoutError:
            raise NpivFailure(f"{self.host.name}: vport {wwpn} still in fc_vports "
                              f"{timeout:.0f} s after its guest went: leaked") from None
