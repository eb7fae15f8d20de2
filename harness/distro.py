"""What differs between the distribution families a lab host can run, one object each.

Modules ask `distro(spec.family)` for a command or a name instead of switching on the
family themselves, so a new family is one more object here.
"""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

from .errors import ConfigError

SupportCollector = Literal["sos", "supportconfig"]  # harness.support has one of each
APT_DPKG_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # apt's default DPkg::Path


@dataclass(frozen=True)
class Distro(ABC):
    """A family's data; its subclass builds the commands whose shape differs."""

    family: str
    grub_cfg: str
    regenerate_grub: str
    grub_defaults_file: str  # where grub_settings writes
    # Regenerating commands the packages' maintainer scripts look up through PATH: a
    # no-op stand-in first in PATH keeps the install from regenerating grub.cfg itself.
    grub_regenerators_on_path: tuple[str, ...]
    grub_editenv: str  # grub-editenv on the grubenv that GRUB_DEFAULT=saved reads
    xen_services: tuple[str, ...]  # systemd units active on a healthy dom0
    support_collector: SupportCollector
    # Makes xenconsoled log guest consoles (restarts it).
    console_logging: str

    @abstractmethod
    def install_packages(self, files: list[str], scripts_path_first: str | None = None) -> str:
        """Shell installing these local package files, downgrades allowed; the packages'
        scripts look up commands in `scripts_path_first` before the system's."""

    @abstractmethod
    def installed_versions(self, names: list[str]) -> str:
        """Shell printing `name version` for each of these packages installed."""

    @abstractmethod
    def grub_settings(self, settings: dict[str, str]) -> str:
        """Shell that sets these /etc/default/grub variables (GRUB_DEFAULT, ...)."""

    @staticmethod
    def setting_line(key: str, value: str) -> str:
        return f"{key}={shlex.quote(value)}"

    def set_saved_entry(self, path: str) -> str:
        """Shell making `path` (ids joined by `>`) the entry GRUB_DEFAULT=saved boots."""
        return f"{self.grub_editenv} set {shlex.quote('saved_entry=' + path)}"

    @property
    def list_grubenv(self) -> str:
        """Shell printing grubenv's variables, one `name=value` a line."""
        return f"{self.grub_editenv} list"


def _quoted(words: list[str]) -> str:
    return " ".join(shlex.quote(word) for word in words)


@dataclass(frozen=True)
class _Debian(Distro):
    def install_packages(self, files: list[str], scripts_path_first: str | None = None) -> str:
        # Local files only: hosts may have no package mirror. Downgrades are how a
        # bisection goes back to an older build.
        # A dpkg lock still held (a run killed mid-install) is waited for, not fatal.
        # apt runs dpkg, and so the maintainer scripts, with PATH set to DPkg::Path,
        # not the caller's.
        path = (f"-o DPkg::Path={shlex.quote(scripts_path_first)}:{APT_DPKG_PATH} "
                if scripts_path_first else "")
        return ("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --allow-downgrades "
                f"--no-install-recommends -o DPkg::Lock::Timeout=120 {path}"
                "-o Dpkg::Options::=--force-confdef "
                f"-o Dpkg::Options::=--force-confold {_quoted(files)}")

    def installed_versions(self, names: list[str]) -> str:
        return (f"dpkg-query -W -f='${{Package}} ${{Version}} ${{db:Status-Abbrev}}\\n' "
                f"{_quoted(names)} 2>/dev/null | awk '$3 == \"ii\" {{print $1, $2}}'")

    def grub_settings(self, settings: dict[str, str]) -> str:
        # A drop-in read after /etc/default/grub and Debian's own grub.d/xen.cfg.
        body = "".join(self.setting_line(key, value) + "\n" for key, value in settings.items())
        header = "# Written by xen-hil: the Xen build under test boots by default.\n"
        return f"printf %s {shlex.quote(header + body)} > {shlex.quote(self.grub_defaults_file)}"


@dataclass(frozen=True)
class _Suse(Distro):
    def install_packages(self, files: list[str], scripts_path_first: str | None = None) -> str:
        if scripts_path_first:  # rpm sets its scriptlets' PATH (_install_script_path)
            raise ValueError("zypper installs offer no PATH for the packages' scripts")
        return ("zypper --non-interactive install --oldpackage --allow-unsigned-rpm "
                f"{_quoted(files)}")

    def installed_versions(self, names: list[str]) -> str:
        return f"rpm -q --qf '%{{NAME}} %{{VERSION}}-%{{RELEASE}}\\n' {_quoted(names)} 2>/dev/null"

    def grub_settings(self, settings: dict[str, str]) -> str:
        # SUSE has no grub.d drop-ins: replace or append the lines in /etc/default/grub.
        commands = []
        for key, value in settings.items():
            line = shlex.quote(self.setting_line(key, value))
            commands.append(
                f"(grep -q '^{key}=' /etc/default/grub && "
                f"sed -i 's|^{key}=.*|'{line}'|' /etc/default/grub || "
                f"echo {line} >> /etc/default/grub)")
        return " && ".join(commands)


DEBIAN: Distro = _Debian(
    family="debian",
    grub_cfg="/boot/grub/grub.cfg",
    regenerate_grub="update-grub",
    grub_defaults_file="/etc/default/grub.d/zz-xenhil.cfg",
    # The postinst of xen-hypervisor-* and xen-hypervisor-common: `if command -v
    # update-grub > /dev/null && [ -d /boot/grub ]; then update-grub || :; fi`.
    grub_regenerators_on_path=("update-grub",),
    grub_editenv="grub-editenv /boot/grub/grubenv",
    xen_services=("xen", "xendomains"),
    support_collector="sos",
    console_logging=(
        "touch /etc/default/xen && sed -i '/^XENCONSOLED_ARGS=/d' /etc/default/xen && "
        "echo 'XENCONSOLED_ARGS=\"--log=guest --timestamp=guest\"' >> /etc/default/xen && "
        "systemctl restart xen"
    ),
)
SUSE: Distro = _Suse(
    family="suse",
    grub_cfg="/boot/grub2/grub.cfg",
    regenerate_grub="grub2-mkconfig -o /boot/grub2/grub.cfg",
    grub_defaults_file="/etc/default/grub",
    # The xen package's %post runs /sbin/update-bootloader --refresh, which runs
    # /usr/sbin/grub2-mkconfig (perl-Bootloader's grub2/config): absolute paths, so
    # PATH cannot stop that regeneration; it comes on top of the harness's own.
    grub_regenerators_on_path=(),
    grub_editenv="grub2-editenv /boot/grub2/grubenv",
    xen_services=("xencommons", "xendomains"),
    support_collector="supportconfig",
    console_logging=(
        "sed -i '/^XENCONSOLED_TRACE=/d' /etc/sysconfig/xencommons && "
        "echo 'XENCONSOLED_TRACE=\"guest\"' >> /etc/sysconfig/xencommons && "
        "systemctl restart xenconsoled"
    ),
)
DISTROS = {d.family: d for d in (DEBIAN, SUSE)}
FAMILIES = tuple(DISTROS)


def distro(family: str) -> Distro:
    try:
        return DISTROS[family]
    except KeyError:
        raise ConfigError(f"unknown distro family {family!r}; known: "
                          f"{', '.join(FAMILIES)}") from None
