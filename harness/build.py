"""A Xen build under test: a directory (or list) of .deb or .rpm files.

Name, version and architecture are read from the packages themselves (dpkg-deb, rpm),
never from file names. The hypervisor package says which Xen version must boot:
Debian's `xen-hypervisor-<series>-<arch>`, SUSE's `xen` (which holds /boot/xen-*.gz).
"""

from __future__ import annotations

import functools
import io
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

_UPSTREAM_VERSION = re.compile(r"^(?:\d+:)?(\d+\.\d+(?:\.\d+)?)")


class BuildError(ConfigError):
    """The build cannot be used: missing, empty, mixed, or without a hypervisor."""


@dataclass(frozen=True)
class Package:
    path: Path
    name: str
    version: str
    arch: str
    format: str  # "deb" or "rpm"


@dataclass(frozen=True)
class XenBuild:
    source: str
    packages: tuple[Package, ...]

    @property
    def format(self) -> str:
        return self.packages[0].format

    @property
    def hypervisor(self) -> Package:
        for package in self.packages:
            if _is_hypervisor(package):
                return package
        raise AssertionError("checked in load_build")

    @property
    def xen_version(self) -> str:
        """The upstream Xen version (e.g. 4.17.7) that must boot."""
        match = _UPSTREAM_VERSION.match(self.hypervisor.version)
        if match is None:
            raise BuildError(f"{self.source}: cannot read a Xen version from "
                             f"{self.hypervisor.name} {self.hypervisor.version}")
        return match.group(1)

    @property
    def label(self) -> str:
        """Short name for reports: hypervisor package and its full version."""
        return f"{self.hypervisor.name} {self.hypervisor.version}"

    def hypervisor_config(self) -> dict[str, str] | None:
        """The Kconfig the hypervisor was built with (Debian ships it as
        /boot/xen-*.config), as {"CONFIG_SHADOW_PAGING": "y", ...} with options that are
        "not set" as "n"; None where the package has none or is not a .deb."""
        if self.format != "deb":
            return None
        return _deb_hypervisor_config(self.hypervisor.path)


def _is_hypervisor(package: Package) -> bool:
    if package.format == "deb":
        return package.name.startswith("xen-hypervisor-") and package.name != \
            "xen-hypervisor-common"
    return package.name == "xen"


def _read_deb(path: Path) -> Package:
    if shutil.which("dpkg-deb") is None:
        raise BuildError("dpkg-deb is not installed; it is needed to read .deb builds")
    done = subprocess.run(["dpkg-deb", "-f", str(path), "Package", "Version", "Architecture"],
                          capture_output=True, text=True, check=False)
    fields = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    if done.returncode != 0 or not {"Package", "Version"} <= fields.keys():
        raise BuildError(f"{path}: not a readable .deb: {done.stderr.strip()}")
    return Package(path, fields["Package"], fields["Version"],
                   fields.get("Architecture", ""), "deb")


# Reading the package's file tree: a hypervisor package is a few MiB.
_DEB_READ_TIMEOUT = 60
_KCONFIG_LINE = re.compile(r"^(CONFIG_\w+)=(.*)$|^# (CONFIG_\w+) is not set$")


@functools.cache
def _deb_hypervisor_config(path: Path) -> dict[str, str] | None:
    done = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(path)], capture_output=True,
                          check=False, timeout=_DEB_READ_TIMEOUT)
    if done.returncode != 0:
        raise BuildError(f"{path}: not a readable .deb: "
                         f"{done.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tree:
        for member in tree:
            name = member.name.removeprefix("./")
            if member.isfile() and re.fullmatch(r"boot/xen[^/]*\.config", name):
                stream = tree.extractfile(member)
                assert stream is not None  # a regular file
                return parse_kconfig(stream.read().decode(errors="replace"))
    return None


def parse_kconfig(text: str) -> dict[str, str]:
    options = {}
    for line in text.splitlines():
        match = _KCONFIG_LINE.match(line.strip())
        if match is None:
            continue
        if match.group(1):
            options[match.group(1)] = match.group(2).strip('"')
        else:
            options[match.group(3)] = "n"
    return options


def _read_rpm(path: Path) -> Package:
    if shutil.which("rpm") is None:
        raise BuildError("rpm is not installed (Debian: apt-get install rpm); it is needed "
                         "to read .rpm builds")
    done = subprocess.run(
        ["rpm", "-qp", "--nosignature", "--nodigest",
         "--qf", "%{NAME}\\n%{VERSION}-%{RELEASE}\\n%{ARCH}\\n", str(path)],
        capture_output=True, text=True, check=False)
    lines = done.stdout.splitlines()
    if done.returncode != 0 or len(lines) < 3:
        raise BuildError(f"{path}: not a readable .rpm: {done.stderr.strip()}")
    return Package(path, lines[0], lines[1], lines[2], "rpm")


def load_build(source: str | Path | list[Path]) -> XenBuild:
    """Read a build from a directory of packages or an explicit list of package files."""
    if isinstance(source, list):
        files, label = source, ", ".join(str(path) for path in source)
    else:
        directory = Path(source)
        label = str(directory)
        if not directory.is_dir():
            raise BuildError(f"build {directory}: no such directory")
        files = sorted(p for p in directory.iterdir() if p.suffix in (".deb", ".rpm"))
    if not files:
        raise BuildError(f"build {label}: no .deb or .rpm files in it")
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise BuildError(f"build {label}: missing package files: {', '.join(missing)}")
    formats = {path.suffix for path in files}
    if len(formats) > 1:
        raise BuildError(f"build {label}: mixes .deb and .rpm packages")
    reader = _read_deb if formats == {".deb"} else _read_rpm
    packages = tuple(reader(path) for path in files)
    if not any(_is_hypervisor(package) for package in packages):
        wanted = "xen-hypervisor-*" if formats == {".deb"} else "xen"
        raise BuildError(f"build {label}: no hypervisor package ({wanted}) among "
                         f"{', '.join(p.name for p in packages)}")
    return XenBuild(label, packages)
