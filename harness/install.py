"""Install a Xen build on a host and make it the next boot.

Steps, each in the host's transcript: copy the packages, install them with the host's
package manager, regenerate the GRUB configuration, pick the entry that boots this
build's hypervisor (osstest's way: parse grub.cfg, set GRUB_DEFAULT to its path), set
the Xen command line, regenerate again. Booting it and verifying the version is the
strategy's job (harness.strategy).
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from dataclasses import dataclass

from .build import XenBuild
from .grubcfg import GrubEntry, GrubEntryNotFound, find_xen_entry, parse_grub_cfg
from .lab import HostSpec
from .remote import RemoteHost

log = logging.getLogger(__name__)

STAGING_DIR = "/var/tmp/xenhil-build"


@dataclass(frozen=True)
class Distro:
    """What differs between the families a lab host can run."""

    family: str
    grub_cfg: str
    regenerate_grub: str
    grub_defaults_file: str

    def install_packages(self, files: list[str], fmt: str) -> str:
        quoted = " ".join(shlex.quote(f) for f in files)
        if self.family == "debian":
            # Local files only: hosts may have no package mirror. Downgrades are how a
            # bisection goes back to an older build.
            # A dpkg lock still held (a run killed mid-install) is waited for, not fatal.
            return ("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --allow-downgrades "
                    "--no-install-recommends -o DPkg::Lock::Timeout=120 "
                    "-o Dpkg::Options::=--force-confdef "
                    f"-o Dpkg::Options::=--force-confold {quoted}")
        return f"zypper --non-interactive install --oldpackage --allow-unsigned-rpm {quoted}"

    def installed_versions(self, names: list[str]) -> str:
        """Shell printing `name version` for each of these packages installed."""
        quoted = " ".join(shlex.quote(name) for name in names)
        if self.family == "debian":
            return (f"dpkg-query -W -f='${{Package}} ${{Version}} ${{db:Status-Abbrev}}\\n' "
                    f"{quoted} 2>/dev/null | awk '$3 == \"ii\" {{print $1, $2}}'")
        return f"rpm -q --qf '%{{NAME}} %{{VERSION}}-%{{RELEASE}}\\n' {quoted} 2>/dev/null"

    @staticmethod
    def setting_line(key: str, value: str) -> str:
        return f"{key}={shlex.quote(value)}"

    def grub_settings(self, settings: dict[str, str]) -> str:
        """Shell that sets these /etc/default/grub variables (GRUB_DEFAULT, ...)."""
        if self.family == "debian":
            # A drop-in read after /etc/default/grub and Debian's own grub.d/xen.cfg.
            body = "".join(self.setting_line(key, value) + "\n"
                           for key, value in settings.items())
            header = "# Written by xen-hil: the Xen build under test boots by default.\n"
            return (f"printf %s {shlex.quote(header + body)} > "
                    f"{shlex.quote(self.grub_defaults_file)}")
        # SUSE has no grub.d drop-ins: replace or append the lines in /etc/default/grub.
        commands = []
        for key, value in settings.items():
            line = shlex.quote(self.setting_line(key, value))
            commands.append(
                f"(grep -q '^{key}=' /etc/default/grub && "
                f"sed -i 's|^{key}=.*|'{line}'|' /etc/default/grub || "
                f"echo {line} >> /etc/default/grub)")
        return " && ".join(commands)


DISTROS = {
    "debian": Distro("debian", "/boot/grub/grub.cfg", "update-grub",
                     "/etc/default/grub.d/zz-xenhil.cfg"),
    "suse": Distro("suse", "/boot/grub2/grub.cfg",
                   "grub2-mkconfig -o /boot/grub2/grub.cfg", "/etc/default/grub"),
}


def xen_cmdline(spec: HostSpec) -> str:
    """The Xen command line every lab host boots with, plus the lab's extras."""
    parts = ["console=com1", "com1=115200,8n1", "loglvl=all", "guest_loglvl=all",
             f"dom0_mem={spec.dom0_mem}"]
    if spec.xen_cmdline_extra:
        parts.append(spec.xen_cmdline_extra)
    return " ".join(parts)


def hypervisor_image(build: XenBuild) -> str:
    """The /boot/xen-*.gz file the build's hypervisor package installs."""
    package = build.hypervisor
    if package.format == "deb":
        listing = subprocess.run(["dpkg-deb", "-c", str(package.path)], capture_output=True,
                                 text=True, check=True).stdout
        paths = [line.split()[-1].lstrip(".") for line in listing.splitlines()]
    else:
        paths = subprocess.run(["rpm", "-qlp", str(package.path)], capture_output=True,
                               text=True, check=True).stdout.split()
    images = [p for p in paths if p.startswith("/boot/xen-") and p.endswith(".gz")]
    if not images:
        raise ValueError(f"{package.path}: installs no /boot/xen-*.gz")
    # SUSE ships xen-<full version>.gz plus shorter symlinks: the longest is the file.
    return max(images, key=len)


def _grub_entries(remote: RemoteHost, distro: Distro) -> list[GrubEntry]:
    return parse_grub_cfg(remote.run(f"cat {distro.grub_cfg}").stdout)


def installed_entry(remote: RemoteHost, spec: HostSpec, build: XenBuild) -> GrubEntry | None:
    """The Xen entry of `build` if the host has it installed already, exactly: every
    package at the build's version, and GRUB set up by us to boot it with this lab's
    Xen command line. None if anything differs."""
    distro = DISTROS[spec.family]
    wanted = {package.name: package.version for package in build.packages}
    output = remote.run(distro.installed_versions(sorted(wanted)), check=False).stdout
    installed = dict(line.split()[:2] for line in output.splitlines() if len(line.split()) > 1)
    if installed != wanted:
        return None
    try:
        entry = find_xen_entry(_grub_entries(remote, distro), hypervisor_image(build))
    except GrubEntryNotFound:
        return None
    settings = remote.run(f"cat {shlex.quote(distro.grub_defaults_file)}", check=False).stdout
    lines = set(settings.splitlines())
    expected = {distro.setting_line("GRUB_DEFAULT", entry.default_path),
                distro.setting_line("GRUB_CMDLINE_XEN_DEFAULT", xen_cmdline(spec))}
    return entry if expected <= lines else None


def install_build(remote: RemoteHost, spec: HostSpec, build: XenBuild,
                  timeout: float) -> GrubEntry:
    """Install `build` on the host and make its Xen entry the next boot; return the entry.
    A host that has exactly this build installed already is left as it is."""
    distro = DISTROS[spec.family]
    entry = installed_entry(remote, spec, build)
    if entry is not None:
        log.info("%s: %s is installed already; next boot: %s", spec.name, build.label,
                 entry.title)
        return entry
    remote.run(f"rm -rf {STAGING_DIR} && mkdir -p {STAGING_DIR}")
    files = []
    for package in build.packages:
        target = f"{STAGING_DIR}/{package.path.name}"
        remote.put(package.path, target)
        files.append(target)
    cmdline = {"GRUB_CMDLINE_XEN_DEFAULT": xen_cmdline(spec)}
    # Set before installing: where the package regenerates grub.cfg itself (Debian's
    # does), that run already has the command line, and one regeneration is saved.
    remote.run(distro.grub_settings(cmdline))
    log.info("%s: installing %s (%d packages)", spec.name, build.label, len(files))
    remote.run(distro.install_packages(files, build.format), timeout=timeout)
    hypervisor = hypervisor_image(build)
    try:
        entry = find_xen_entry(_grub_entries(remote, distro), hypervisor)
    except GrubEntryNotFound:
        remote.run(distro.regenerate_grub, timeout=timeout)
        entry = find_xen_entry(_grub_entries(remote, distro), hypervisor)
    remote.run(distro.grub_settings({"GRUB_DEFAULT": entry.default_path, **cmdline}))
    remote.run(distro.regenerate_grub, timeout=timeout)
    # The entry's id path must still exist after regeneration.
    find_xen_entry(_grub_entries(remote, distro), hypervisor)
    # The next step is a power cycle, not a clean reboot: nothing may stay in the cache.
    remote.run(f"rm -rf {STAGING_DIR} && sync")
    log.info("%s: next boot: %s", spec.name, entry.title)
    return entry
