"""Debian packages on the controller, for building artifacts from them: deb822
stanzas, apt on a private state, and .deb files read and unpacked with dpkg-deb.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .build_cache import VlabBuildError, run, tail


def deb822_fields(stanza: str) -> dict[str, str]:
    """Fields of one deb822 stanza, names lowercased, continuation lines joined."""
    fields: dict[str, str] = {}
    name = ""
    for line in stanza.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line[0] in " \t" and name:
            fields[name] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            name = key.strip().lower()
            fields[name] = value.strip()
    return fields


class PrivateApt:
    """apt-get and apt-cache on a private state: a dpkg status of our choosing (empty,
    or an image's) as the installed set, and their own package lists and caches, so
    the controller's APT state is neither used nor changed. Sources and configuration
    are the controller's."""

    def __init__(self, state: Path, dpkg_status: Path | None = None) -> None:
        for sub in ("lists/partial", "cache", "log"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        if dpkg_status is None:
            (state / "status").touch()
        else:
            shutil.copyfile(dpkg_status, state / "status")
        self.options = [
            "-q",
            "-o", f"Dir::State={state}",
            "-o", f"Dir::State::status={state / 'status'}",
            "-o", f"Dir::Cache={state / 'cache'}",
            "-o", f"Dir::Log={state / 'log'}",
            # the private directories are root's; the _apt user could not write them
            "-o", "APT::Sandbox::User=root",
        ]

    def update(self) -> None:
        run(["apt-get", *self.options, "update"], what="apt-get update")

    def show(self, package: str) -> str:
        return run(["apt-cache", *self.options, "show", "--no-all-versions", package],
                   what=f"apt-cache show {package}")

    def download(self, packages: Sequence[str], dest: Path) -> list[Path]:
        """Exactly these packages (no dependencies), into `dest`."""
        proc = subprocess.run(["apt-get", *self.options, "download", *packages], cwd=dest,
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise VlabBuildError(f"apt-get download failed (exit {proc.returncode}): "
                                 f"{tail(proc.stdout + proc.stderr)}")
        return sorted(dest.glob("*.deb"))


def deb_fields(deb: Path, *names: str) -> dict[str, str]:
    """Control fields of a .deb (`dpkg-deb -f`), names lowercased."""
    return deb822_fields(run(["dpkg-deb", "-f", str(deb), *names],
                             what=f"dpkg-deb -f {deb.name}"))


def unpack(deb: Path, tree: Path) -> None:
    """Extract a .deb's files into `tree` (`dpkg-deb -x`: no maintainer scripts)."""
    run(["dpkg-deb", "-x", str(deb), str(tree)], what=f"dpkg-deb -x {deb.name}")
