"""Disks of virtual hosts with a build installed and verified, kept for the next install.

Installing a build and booting into it costs a virtual host minutes under TCG, and most
runs install the same build as the run before. So when the harness has installed a
build on a virtual host, it powers the host off, copies the host's disk overlay (while
QEMU is stopped, the copy is consistent), and boots the build from that disk. Once the
boot is verified (the build's Xen runs), the copy is kept under
<cache>/vlab/installed/, keyed by the base image and the build's package files.

The next time the harness is to install that build on a host of the virtual lab, the
host, powered off, gets a new overlay on the kept disk instead, and is then power cycled
through its BMC and booted for real, with the same checks. A real lab installs every
time. `xenhil.vlab.keep_installed` in the lab file says how many builds are kept (the
least recently used go first; 0 keeps none).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..build import XenBuild
from ..build_cache import file_lock
from ..errors import InfrastructureError
from ..lab import Lab
from . import control
from .machine import VirtualHost

log = logging.getLogger(__name__)

DEFAULT_KEEP = 3
POWER_OFF_TIMEOUT = 30.0  # ipmi_sim: a short wait, SIGTERM, then 5 s before SIGKILL
COPY_TIMEOUT = 300.0
LOCK_TIMEOUT = 60.0  # what it guards takes milliseconds


def installed_dir() -> Path:
    return control.vlab_dir() / "installed"


def build_digest(build: XenBuild) -> str:
    """What the build is, byte for byte: the name and SHA-256 of every package file."""
    digest = hashlib.sha256()
    for package in sorted(build.packages, key=lambda package: package.path.name):
        with open(package.path, "rb") as data:
            file_digest = hashlib.file_digest(data, "sha256").hexdigest()
        digest.update(f"{package.path.name} {file_digest}\n".encode())
    return digest.hexdigest()


class KeptDisks:
    """The kept disks of one virtual lab, and the hosts' overlays on them."""

    # The machine ID is the one identity a disk keeps (vlab-identity sets name and
    # addresses at every boot), and udev derives bridges' MAC addresses from it: two
    # hosts booted from one kept disk would share xenbr0's MAC, and neither would reach
    # the other. Emptied, every first boot from the disk makes one of its own.
    before_keeping = "truncate -s 0 /etc/machine-id && sync"

    def __init__(self, lab: Lab, keep: int) -> None:
        self.machines = {machine.name: machine for machine in control.virtual_hosts(lab)}
        self.keep = keep
        self._digests: dict[str, str] = {}

    @classmethod
    def for_lab(cls, lab: Lab) -> KeptDisks | None:
        """None for a lab that is not virtual, or that keeps no disks."""
        section = lab.options.get("vlab")
        if not isinstance(section, dict):
            return None
        keep = int(section.get("keep_installed", DEFAULT_KEEP))
        return cls(lab, keep) if keep > 0 else None

    def _key(self, machine: VirtualHost, build: XenBuild) -> str:
        if build.source not in self._digests:
            self._digests[build.source] = build_digest(build)
        base = (machine.run_dir / "base-image").read_text()
        return hashlib.sha256(f"{base}{self._digests[build.source]}".encode()).hexdigest()[:24]

    def kept(self, host: str, build: XenBuild) -> Path | None:
        """The kept disk of `build` for this host's base image, if there is one."""
        machine = self.machines[host]
        if not (machine.run_dir / "base-image").exists():  # never started
            return None
        disk = installed_dir() / f"{self._key(machine, build)}.qcow2"
        return disk if disk.is_file() else None

    def restore(self, host: str, build: XenBuild) -> Path:
        """Give the powered-off host a new overlay on the kept disk of `build`."""
        machine = self.machines[host]
        _await_machine_off(machine)
        with _kept_disks_lock():  # another lab's run may be removing unused disks
            disk = self.kept(host, build)
            if disk is None:
                raise InfrastructureError(f"{host}: no kept disk of {build.label}")
            fresh = machine.overlay.with_suffix(".new")
            _qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(disk),
                      str(fresh))
            os.replace(fresh, machine.overlay)
            machine.kept_disk_marker.write_text(f"{disk}\n")
            os.utime(disk)  # recently used: pruned last
        log.info("%s: booting from the kept disk of %s (%s), not installing it", host,
                 build.label, disk.name)
        return disk

    def stage(self, host: str) -> bool:
        """Copy the powered-off host's overlay, just installed, to be kept once its boot
        is verified. Only an overlay straight on the base image is copied: one on a kept
        disk would depend on that disk."""
        machine = self.machines[host]
        _staged(machine).unlink(missing_ok=True)
        if machine.kept_disk_marker.exists():
            log.info("%s: its disk is an overlay on a kept disk; this install is not kept",
                     host)
            return False
        _await_machine_off(machine)
        subprocess.run(["cp", "--reflink=auto", "--sparse=always", str(machine.overlay),
                        str(_staged(machine))], check=True, timeout=COPY_TIMEOUT)
        return True

    def keep_staged(self, host: str, build: XenBuild) -> Path | None:
        """The staged copy becomes the kept disk of `build` (the boot from it was
        verified); then the least recently used beyond `keep` go."""
        machine = self.machines[host]
        staged = _staged(machine)
        if not staged.exists():
            return None
        installed_dir().mkdir(parents=True, exist_ok=True)
        disk = installed_dir() / f"{self._key(machine, build)}.qcow2"
        try:
            os.link(staged, disk)  # two hosts may keep the same build at once: one wins
        except FileExistsError:
            pass
        else:
            disk.with_suffix(".json").write_text(json.dumps({
                "build": build.label, "source": build.source, "installed_on": host,
                "kept": datetime.now(UTC).isoformat(timespec="seconds"),
                "base_image": (machine.run_dir / "base-image").read_text().strip()}))
            log.info("%s: kept its disk with %s installed (%s)", host, build.label,
                     disk.name)
        staged.unlink()
        self.prune()
        return disk

    def prune(self) -> None:
        """Remove the least recently used kept disks beyond `keep`, never one a host's
        overlay is on."""
        for disk in _remove_unused(_by_recent_use()[self.keep:]):
            log.info("removed the kept disk %s (least recently used)", disk.name)


def in_use_disks() -> dict[Path, list[str]]:
    """The kept disks that overlays of the virtual lab's hosts are on, and those hosts."""
    used: dict[Path, list[str]] = {}
    for marker in sorted((control.vlab_dir() / "run").glob("*/*/kept-disk")):
        used.setdefault(Path(marker.read_text().strip()), []).append(marker.parent.name)
    return used


@dataclass(frozen=True)
class KeptDisk:
    """A kept disk as `xenhil vlab status` shows it."""

    path: Path
    build: str
    source: str
    kept: str
    size: int
    in_use_by: list[str]


def kept_disks() -> list[KeptDisk]:
    """Every kept disk, the most recently used first."""
    in_use = in_use_disks()
    disks = []
    for disk in _by_recent_use():
        try:
            about = json.loads(disk.with_suffix(".json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            about = {}
        disks.append(KeptDisk(disk, str(about.get("build", "?")), str(about.get("source", "?")),
                              str(about.get("kept", "?")), disk.stat().st_size,
                              in_use.get(disk, [])))
    return disks


def forget_kept_disks() -> int:
    """Remove every kept disk no overlay is on (the next install of any build installs);
    return how many went."""
    return len(_remove_unused(_by_recent_use()))


def _by_recent_use() -> list[Path]:
    """The kept disks, the most recently used first."""
    return sorted(installed_dir().glob("*.qcow2"), key=lambda disk: -disk.stat().st_mtime)


def _remove_unused(disks: list[Path]) -> list[Path]:
    """Remove those of `disks` no host's overlay is on; return them."""
    with _kept_disks_lock():
        in_use = in_use_disks()
        removed = [disk for disk in disks if disk not in in_use and disk.exists()]
        for disk in removed:
            disk.unlink()
            disk.with_suffix(".json").unlink(missing_ok=True)
    return removed


def _kept_disks_lock() -> contextlib.AbstractContextManager[None]:
    """Between the processes of two virtual labs: a disk is never removed between a
    host finding it and its overlay's marker naming it."""
    return file_lock(control.vlab_dir() / "installed.lock", LOCK_TIMEOUT,
                     "another process of the virtual lab", InfrastructureError)


def _staged(machine: VirtualHost) -> Path:
    return machine.run_dir / "installed.qcow2"


def _await_machine_off(machine: VirtualHost) -> None:
    """QEMU must be gone before its disk is copied or replaced."""
    deadline = time.monotonic() + POWER_OFF_TIMEOUT
    while control.machine_pid(machine) is not None:
        if time.monotonic() > deadline:
            raise InfrastructureError(f"{machine.name}: QEMU still runs {POWER_OFF_TIMEOUT:.0f} s "
                                      "after the power off")
        time.sleep(0.2)


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, timeout=60)
