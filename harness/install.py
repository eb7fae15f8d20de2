"""Install a Xen build on a host and make it the next boot.

Steps, each one command in the host's transcript: copy the packages the host does not
have at the build's version, put a no-op update-grub first in PATH, write the GRUB
settings (GRUB_DEFAULT=saved, the Xen command line, the serial terminal), install those
packages with the host's package manager (their maintainer scripts find the no-op),
regenerate grub.cfg once if anything GRUB's scripts read changed, pick the entry that
boots this build's hypervisor (osstest's way: parse grub.cfg, take its id path) and save
it as grubenv's saved_entry. Booting it and verifying the version is the strategy's job
(harness.strategy).
"""

from __future__ import annotations

import logging
import shlex
import subprocess

from .build import Package, XenBuild
from .distro import Distro, distro
from .grubcfg import (
    GrubEntry,
    GrubEntryNotFound,
    find_xen_entry,
    parse_grub_cfg,
    parse_saved_entry,
)
from .lab import XEN_CONSOLES, HostSpec
from .remote import RemoteHost

log = logging.getLogger(__name__)

STAGING_DIR = "/var/tmp/xenhil-build"
SHIM_DIR = f"{STAGING_DIR}/bin"  # first in PATH during the package install only
# What grub-mkconfig's scripts read: a package shipping a file here needs a regeneration.
GRUB_INPUTS = ("/boot/", "/etc/grub.d/", "/etc/default/grub")


def xen_cmdline(spec: HostSpec) -> str:
    """The Xen command line every lab host boots with, plus the lab's extras. Xen's
    console is the UART the lab's console resource carries, at its speed."""
    uart = spec.xen_console
    parts = [f"console={uart}", f"{uart}={spec.console.speed},8n1", "loglvl=all",
             "guest_loglvl=all", f"dom0_mem={spec.dom0_mem}"]
    if spec.xen_cmdline_extra:
        parts.append(spec.xen_cmdline_extra)
    return " ".join(parts)


def grub_serial(spec: HostSpec) -> str:
    """GRUB's serial terminal on the UART of the host's console (unit 0 is COM1), so
    that the bootloader shows on the console the harness records."""
    return f"serial --unit={XEN_CONSOLES.index(spec.xen_console)} --speed={spec.console.speed}"


def boot_settings(spec: HostSpec) -> dict[str, str]:
    """The GRUB settings every boot of a build needs. The entry itself is grubenv's
    saved_entry, set after the one regeneration: choosing it needs the generated
    grub.cfg, and GRUB_DEFAULT=saved reads it at boot without another regeneration.
    GRUB_SAVEDEFAULT=true would overwrite it at every boot with the booted entry."""
    return {"GRUB_DEFAULT": "saved",
            "GRUB_SAVEDEFAULT": "false",
            "GRUB_CMDLINE_XEN_DEFAULT": xen_cmdline(spec),
            "GRUB_SERIAL_COMMAND": grub_serial(spec)}


def grub_shims(dist: Distro) -> str | None:
    """Shell writing a no-op for each regenerating command the packages' scripts find
    through PATH; None where they find none."""
    if not dist.grub_regenerators_on_path:
        return None
    commands = [f"mkdir -p {SHIM_DIR}"]
    for name in dist.grub_regenerators_on_path:
        script = (f"#!/bin/sh\necho '{name}: skipped during the package install; "
                  "xen-hil regenerates grub.cfg once afterwards'\nexit 0\n")
        commands.append(f"printf %s {shlex.quote(script)} > {SHIM_DIR}/{name} && "
                        f"chmod +x {SHIM_DIR}/{name}")
    return " && ".join(commands)


def install_command(dist: Distro, files: list[str]) -> str:
    """The package install, with the shims first in its scripts' PATH where there are
    any."""
    return dist.install_packages(files, SHIM_DIR if dist.grub_regenerators_on_path else None)


def package_paths(package: Package) -> list[str]:
    """The paths the package file installs, read on this machine."""
    if package.format == "deb":
        listing = subprocess.run(["dpkg-deb", "-c", str(package.path)], capture_output=True,
                                 text=True, check=True).stdout
        return [line.split()[-1].lstrip(".") for line in listing.splitlines()]
    return subprocess.run(["rpm", "-qlp", str(package.path)], capture_output=True,
                          text=True, check=True).stdout.split()


def hypervisor_image(build: XenBuild) -> str:
    """The /boot/xen-*.gz file the build's hypervisor package installs."""
    package = build.hypervisor
    images = [p for p in package_paths(package)
              if p.startswith("/boot/xen-") and p.endswith(".gz")]
    if not images:
        raise ValueError(f"{package.path}: installs no /boot/xen-*.gz")
    # SUSE ships xen-<full version>.gz plus shorter symlinks: the longest is the file.
    return max(images, key=len)


def _grub_entries(remote: RemoteHost, dist: Distro) -> list[GrubEntry]:
    return parse_grub_cfg(remote.run(f"cat {dist.grub_cfg}").stdout)


def installed_versions(remote: RemoteHost, dist: Distro, build: XenBuild) -> dict[str, str]:
    """Name -> version of the build's packages that the host has installed."""
    names = sorted(package.name for package in build.packages)
    output = remote.run(dist.installed_versions(names), check=False).stdout
    return dict(line.split()[:2] for line in output.splitlines() if len(line.split()) > 1)


def _settings_in_place(remote: RemoteHost, spec: HostSpec) -> bool:
    """Whether the host's GRUB settings are ours, with this lab's Xen command line and
    serial terminal."""
    dist = distro(spec.family)
    settings = remote.run(f"cat {shlex.quote(dist.grub_defaults_file)}", check=False).stdout
    expected = {dist.setting_line(key, value) for key, value in boot_settings(spec).items()}
    return expected <= set(settings.splitlines())


def _xen_entry(remote: RemoteHost, dist: Distro, build: XenBuild) -> GrubEntry | None:
    try:
        return find_xen_entry(_grub_entries(remote, dist), hypervisor_image(build))
    except GrubEntryNotFound:
        return None


def installed_entry(remote: RemoteHost, spec: HostSpec, build: XenBuild) -> GrubEntry | None:
    """The Xen entry of `build` if the host has it installed already, exactly: every
    package at the build's version, GRUB set up by us with this lab's Xen command line
    and serial terminal, and grubenv's saved_entry naming the entry. None if anything
    differs."""
    return _entry_if_installed(remote, spec, build,
                               installed_versions(remote, distro(spec.family), build))


def _entry_if_installed(remote: RemoteHost, spec: HostSpec, build: XenBuild,
                        installed: dict[str, str]) -> GrubEntry | None:
    dist = distro(spec.family)
    if installed != {package.name: package.version for package in build.packages}:
        return None
    entry = _xen_entry(remote, dist, build)
    if entry is None or not _settings_in_place(remote, spec):
        return None
    grubenv = remote.run(dist.list_grubenv, check=False).stdout
    return entry if parse_saved_entry(grubenv) == entry.default_path else None


def install_build(remote: RemoteHost, spec: HostSpec, build: XenBuild,
                  timeout: float) -> tuple[GrubEntry, bool]:
    """Install `build` on the host and make its Xen entry the next boot; return the entry
    and whether anything was installed. A host that has exactly this build installed
    already is left as it is. Of a build that differs from what the host has in some
    packages only (a bisection's next step, a rebuilt package), only those are copied
    and installed; grub.cfg is regenerated only if one of them ships a file GRUB's
    scripts read or the GRUB settings change."""
    dist = distro(spec.family)
    installed = installed_versions(remote, dist, build)
    entry = _entry_if_installed(remote, spec, build, installed)
    if entry is not None:
        log.info("%s: %s is installed already; next boot: %s", spec.name, build.label,
                 entry.title)
        return entry, False
    changed = [p for p in build.packages if installed.get(p.name) != p.version]
    remote.run(f"rm -rf {STAGING_DIR} && mkdir -p {STAGING_DIR}")
    files = []
    for package in changed:
        target = f"{STAGING_DIR}/{package.path.name}"
        remote.put(package.path, target)
        files.append(target)
    shims = grub_shims(dist)
    if shims is not None:
        remote.run(shims)
    settings_kept = _settings_in_place(remote, spec)
    # Before the install: a package script that regenerates grub.cfg all the same
    # (SUSE's, by absolute path) then writes the right configuration too.
    remote.run(dist.grub_settings(boot_settings(spec)))
    if files:
        if len(files) == len(build.packages):
            log.info("%s: installing %s (%d packages)", spec.name, build.label, len(files))
        else:
            log.info("%s: installing %s: %d of its %d packages, the host has the others "
                     "at the build's version", spec.name, build.label, len(files),
                     len(build.packages))
        remote.run(install_command(dist, files), timeout=timeout)
    grub_reads_changes = any(path.startswith(GRUB_INPUTS)
                             for package in changed for path in package_paths(package))
    entry = None if grub_reads_changes or not settings_kept else _xen_entry(remote, dist, build)
    if entry is None:
        remote.run(dist.regenerate_grub, timeout=timeout)
        entry = find_xen_entry(_grub_entries(remote, dist), hypervisor_image(build))
    else:
        log.info("%s: grub.cfg not regenerated: no GRUB input or setting changed", spec.name)
    # saved_entry is read as GRUB's `default`, which takes a path of ids from the top,
    # joined by `>`, for an entry in a submenu (GRUB manual, "default").
    remote.run(dist.set_saved_entry(entry.default_path))
    # The next step is a power cycle, not a clean reboot: nothing may stay in the cache.
    remote.run(f"rm -rf {STAGING_DIR} && sync")
    log.info("%s: next boot: %s", spec.name, entry.title)
    return entry, True
