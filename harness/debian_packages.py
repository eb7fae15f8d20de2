"""Debian packages on the controller, for building artifacts from them: deb822
stanzas, apt on a private state, .deb files read, unpacked and repacked with dpkg-deb,
and versions compared as dpkg compares them.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
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
    """Control fields of a .deb (`dpkg-deb -f`), names lowercased: those named, or all."""
    # the whole control file: asked for one field, dpkg-deb prints its bare value
    fields = deb822_fields(run(["dpkg-deb", "-f", str(deb)], what=f"dpkg-deb -f {deb.name}"))
    wanted = {name.lower() for name in names}
    return {name: value for name, value in fields.items() if not names or name in wanted}


def unpack(deb: Path, tree: Path) -> None:
    """Extract a .deb's files into `tree` (`dpkg-deb -x`: no maintainer scripts)."""
    run(["dpkg-deb", "-x", str(deb), str(tree)], what=f"dpkg-deb -x {deb.name}")


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as Debian version `a` sorts before, with or after `b` (dpkg's rules)."""
    for result, relation in ((-1, "lt"), (1, "gt")):
        if subprocess.run(["dpkg", "--compare-versions", a, relation, b],
                          check=False).returncode == 0:
            return result
    return 0


# Relations through which one package can pin another to an exact version.
PINNING_FIELDS = ("Pre-Depends", "Depends", "Recommends")
_PIN = re.compile(r"(?:^|[,|])\s*([a-z0-9][a-z0-9+.-]+)(?::[a-z0-9-]+)?\s*\(\s*=\s*([^)\s]+)\s*\)")

Edit = Callable[[bytes], bytes]


def exact_pins(fields: Mapping[str, str]) -> set[tuple[str, str]]:
    """(package, version) of every `package (= version)` relation in PINNING_FIELDS of
    control fields as deb_fields returns them."""
    pins = set()
    for name in PINNING_FIELDS:
        for match in _PIN.finditer(fields.get(name.lower(), "")):
            pins.add((match[1], match[2]))
    return pins


def repack(deb: Path, out: Path, version: str, *, edits: Mapping[str, Edit] | None = None,
           repins: Mapping[str, tuple[str, str]] | None = None) -> Path:
    """Rebuilds `deb` into directory `out` at `version`; returns the new file.

    `edits` maps a path the package installs (e.g. "etc/xen/scripts/vif-bridge") to a
    change of its content; md5sums follows. `repins` maps a package name to (old, new):
    exact relations on it at the old version are moved to the new one. Every other
    file, and the owner and mode of every file, stay as they were (checked).
    """
    edits = edits or {}
    with tempfile.TemporaryDirectory(prefix=".repack-", dir=out) as work:
        tree = Path(work) / "tree"
        run(["dpkg-deb", "-R", str(deb), str(tree)], what=f"dpkg-deb -R {deb.name}")
        control = tree / "DEBIAN" / "control"
        text = control.read_text()
        fields = deb822_fields(text)
        control.write_text(_repinned(_with_version(text, version), repins or {}))
        for path, edit in edits.items():
            target = tree / path
            if not target.is_file() or target.is_symlink():
                raise VlabBuildError(f"{deb.name} ships no regular file /{path}")
            # written in place: the file keeps its owner and mode
            with target.open("r+b") as f:
                content = edit(f.read())
                f.seek(0)
                f.write(content)
                f.truncate()
            _update_md5sum(tree / "DEBIAN", path, content)
        upstream = version.split(":", 1)[-1]
        new = out / f"{fields['package']}_{upstream}_{fields['architecture']}.deb"
        run(["dpkg-deb", "--build", "--root-owner-group", str(tree), str(new)],
            what=f"dpkg-deb --build {new.name}")
    if _modes(new) != _modes(deb):
        raise VlabBuildError(f"{new.name}: owners or modes differ from {deb.name}'s")
    return new


def contents(deb: Path) -> list[str]:
    """The paths a .deb installs, without the leading "./" (`dpkg-deb -c`)."""
    return [entry[2].split(" -> ")[0].removeprefix("./") for entry in _listing(deb)]


def _listing(deb: Path) -> list[tuple[str, str, str]]:
    """(mode, owner, path) of every entry of a .deb's data archive."""
    entries = []
    for line in run(["dpkg-deb", "-c", str(deb)], what=f"dpkg-deb -c {deb.name}").splitlines():
        mode, owner, _size, _date, _time, path = line.split(maxsplit=5)
        entries.append((mode, owner, path))
    return entries


def _modes(deb: Path) -> list[tuple[str, str, str]]:
    return sorted(_listing(deb), key=lambda entry: entry[2])


def _with_version(control: str, version: str) -> str:
    new, count = re.subn(r"(?m)^Version: .*$", lambda _: f"Version: {version}", control)
    if count != 1:
        raise VlabBuildError(f"control file without one Version field:\n{control}")
    return new


def _repinned(control: str, repins: Mapping[str, tuple[str, str]]) -> str:
    """Moves exact relations `name (= old)` to `name (= new)` in PINNING_FIELDS."""
    lines = []
    field = ""
    for line in control.splitlines(keepends=True):
        if line[:1] not in (" ", "\t"):
            field = line.split(":", 1)[0]
        if field in PINNING_FIELDS:
            for name, (old, new) in repins.items():
                pin = re.compile(rf"(?<![a-z0-9+.-])({re.escape(name)}(?::[a-z0-9-]+)?\s*)"
                                 rf"\(\s*=\s*{re.escape(old)}\s*\)")
                line = pin.sub(_replacement(new), line)
        lines.append(line)
    return "".join(lines)


def _replacement(version: str) -> Callable[[re.Match[str]], str]:
    return lambda match: f"{match[1]}(= {version})"


def _update_md5sum(debian: Path, path: str, content: bytes) -> None:
    """Updates `path`'s line in DEBIAN/md5sums. debhelper leaves conffiles out (dpkg
    records their sums when it installs them): a conffile needs no line."""
    md5sums = debian / "md5sums"
    lines = md5sums.read_text().splitlines() if md5sums.exists() else []
    at = [i for i, line in enumerate(lines) if line.split(maxsplit=1)[1:] == [path]]
    if at:
        lines[at[0]] = f"{hashlib.md5(content).hexdigest()}  {path}"
        md5sums.write_text("\n".join(lines) + "\n")
        return
    conffiles = debian / "conffiles"
    if not (conffiles.exists() and f"/{path}" in conffiles.read_text().split()):
        raise VlabBuildError(f"{md5sums} has no line for {path}, and it is no conffile")
