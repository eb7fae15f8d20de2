"""Whether a host can run the NPIV scenarios, or exactly what it lacks (the skip reason)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .script import SCRIPTS_DIR
from .sysfs import FCHost, FCSysfs
from .wwn import NpivConfig

if TYPE_CHECKING:
    from ..host import Host

NPIV_SCRIPTS = ("block-npiv", "block-npiv-common.sh", "block-npiv-vport")


def missing_scripts(host: Host, scripts_dir: str = SCRIPTS_DIR) -> list[str]:
    paths = " ".join(shlex.quote(f"{scripts_dir}/{name}") for name in NPIV_SCRIPTS)
    output = host.run(f"for f in {paths}; do [ -e \"$f\" ] || echo \"$f\"; done").stdout
    return output.split()


@dataclass(frozen=True)
class Preflight:
    """What a host offers for the NPIV scenarios: the port to use, or what is missing."""

    port: FCHost | None
    missing: tuple[str, ...]

    @property
    def ready(self) -> bool:
        return self.port is not None and not self.missing


def npiv_preflight(host: Host, config: NpivConfig | None, sysfs: FCSysfs | None = None,
                   scripts_dir: str = SCRIPTS_DIR) -> Preflight:
    """An Online NPort HBA with a free vport on the lab's fabric, and SUSE's block-npiv
    scripts; otherwise exactly what is missing, for the skip reason."""
    sysfs = sysfs or FCSysfs(host)
    missing: list[str] = []
    if config is None:
        missing.append(f"no npiv: section for {host.name} in the lab file (fabric_name, "
                       "target_wwpn, luns, vport_pool)")
    port = None
    if not sysfs.fc_transport_loaded():
        missing.append(f"no FC HBA: {sysfs.path('/sys/class/fc_host')} does not exist (FC "
                       "transport scsi_transport_fc not loaded)")
    else:
        ports = sysfs.fc_hosts()
        if not ports:
            missing.append(f"no FC HBA: {sysfs.path('/sys/class/fc_host')} is empty")
        fabric = config.fabric_name if config is not None else None
        usable = [p for p in ports if not p.npiv_problems(fabric)]
        if usable:
            port = usable[0]
        elif ports:
            missing.append("no FC port can take a vport: " + "; ".join(
                f"{p.name}: {', '.join(p.npiv_problems(fabric))}" for p in ports))
    missing += [f"{path} missing (SUSE xen-tools' NPIV hotplug scripts)"
                for path in missing_scripts(host, scripts_dir)]
    return Preflight(port, tuple(missing))
