"""What a run leaves, as plain data: what the database stores and the comparison reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

RUN_KINDS = ("nightly", "qualification", "adhoc", "repro", "bisect")
# Runs whose verdict can make them a baseline.
BASELINE_KINDS = ("nightly", "qualification")
STATUSES = ("passed", "failed", "broken", "skipped")


@dataclass(frozen=True)
class Figure:
    name: str  # e.g. "migration downtime"
    value: float
    unit: str  # e.g. "s", "%", "Mbit/s"


@dataclass(frozen=True)
class ResultRecord:
    """One test of one run. `attempt` is 1, or 2 for its retest at the end of the run
    (--retest-regressions)."""

    test_id: str  # module::name[params], stable across runs
    status: str  # one of STATUSES
    area: str = ""
    hosts: tuple[str, ...] = ()
    message: str = ""
    duration_s: float = 0.0
    bugs: tuple[str, ...] = ()
    evidence: tuple[str, ...] = ()  # paths relative to the run's reports directory
    attempt: int = 1
    figures: tuple[Figure, ...] = ()


@dataclass(frozen=True)
class HostRecord:
    """What a host ran in one run: enough to tell a firmware change from a Xen one."""

    name: str
    xen_version: str = ""
    xen_cmdline: str = ""
    dom0_kernel: str = ""
    cpu_model: str = ""
    microcode: str = ""
    firmware: str = ""  # dmidecode: BIOS vendor, version, date
    bmc_firmware: str = ""  # ipmitool mc info: firmware revision


@dataclass(frozen=True)
class RunRecord:
    id: str  # the run id: reports/<id>/
    profile: str
    lab: str
    kind: str  # one of RUN_KINDS
    build_label: str = ""
    build_packages: tuple[str, ...] = ()  # "name version" each
    build_hash: str = ""  # of the package set
    started: datetime | None = None
    ended: datetime | None = None
    verdict: str = ""  # "" while running; then the comparison's verdict
    runner: str = ""  # user@machine that ran it
    revision: str = ""  # the harness's git revision
    hosts: tuple[HostRecord, ...] = ()
    results: tuple[ResultRecord, ...] = field(default=())
