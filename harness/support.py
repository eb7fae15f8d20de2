"""Support bundles: the distro's own collector run on a host, fetched, checked, indexed.

A bundle is what a Xen maintainer asks for first when a lab run fails. Per distro family:
- SUSE: `supportconfig -Q -B <name> -R <dir>`, whose xen plugin writes the Xen section
  (scc_<name>.txz plus its .md5). Written from the supportutils documentation; no SUSE
  host exists in the virtual lab, so this path has not run.
- Debian: `sos report` limited to the plugins that matter (a whole sos run takes far too
  long under TCG), plus the harness's own Xen section: sos 4.0's xen plugin is a
  RedHatPlugin only, so Debian's sos does not load it (`--only-plugins xen`: "a
  non-existing plugin (xen) was specified"); elsewhere it is enabled only on bare metal
  and calls `xm`, which Xen removed in 4.5. The Xen section collects what SUSE's xen
  plugin collects, into an archive of its own with a .sha256.
Every archive is fetched over the host's SSH connection, its checksum compared, read to
its end (a truncated archive is broken, not "mostly fine"), unpacked under
reports/<run-id>/support/<host>/<bundle>/ and indexed (sections, files, sizes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import lzma
import re
import shlex
import shutil
import tarfile
import time
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .distro import FAMILIES, SupportCollector, distro
from .errors import ConfigError, InfrastructureError
from .remote import RemoteHost

log = logging.getLogger(__name__)

REMOTE_ROOT = "/var/tmp/xenhil-support"  # on the host; emptied before each collection
# sos plugins on Debian: the boot loader (GRUB Xen command line). The Xen section has
# the rest: Xen units' state, bridges, routes and neighbours. Under TCG, with two
# virtual hosts on 2 cores, sos took 47 s with grub2 alone and 93 s with networking too
# (86 commands for what bridges.txt and routes.txt hold); systemd took 144 s.
SOS_PLUGINS = ("grub2",)
CHECKSUMS = ("sha256", "md5")  # what collectors write beside an archive: <archive>.<hash>
XEN_SECTION = "xen"
# The harness's Xen section on Debian: file name in the archive -> command. The list of
# SUSE's supportconfig xen plugin.
XEN_COMMANDS: dict[str, str] = {
    "xl-info.txt": "xl info --numa",
    "xl-list.txt": "xl list",
    "xl-list-long.txt": "xl list --long",
    "xl-pci-assignable-list.txt": "xl pci-assignable-list",
    "xl-dmesg.txt": "xl dmesg",
    "xenstore-ls.txt": "xenstore-ls -f",
    "xen-services.txt": "systemctl status --all --no-pager 'xen*' 'xendomains*'",
    "xen-units.txt": "systemctl list-unit-files --no-pager 'xen*'",
    "lscpu.txt": "lscpu",
    "bridges.txt": "ip -d link show type bridge; bridge link show",
    "routes.txt": "ip route show table all",
    "arp.txt": "ip neigh show",
    "grub-default.txt": "cat /etc/default/grub /etc/default/grub.d/*.cfg",
    "images.txt": "ls -lR /var/lib/xen/images",
}
XEN_DIRECTORIES: dict[str, str] = {  # copied whole: Xen logs and guest configs
    "etc-xen": "/etc/xen",
    "var-log-xen": "/var/log/xen",
}
# The Xen section's only file on a host that is no Xen dom0 (supportconfig's xen plugin
# exits 111, "skipped", there).
SKIPPED = "SKIPPED"
# What a host may send: a support bundle is kilobytes to a few hundred MiB; more is a
# broken collector or a hostile host filling the disk.
MAX_ARCHIVE_BYTES = 512 * 2**20  # one archive as fetched (compressed)
MAX_MEMBERS = 100_000  # members of one archive
MAX_MEMBER_BYTES = 512 * 2**20  # one member, unpacked
MAX_UNPACKED_BYTES = 2 * 2**30  # all members of one archive, unpacked
BUNDLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class SupportBundleBroken(InfrastructureError):
    """A collector failed, or an archive is not whole: the evidence cannot be trusted."""


@dataclass(frozen=True)
class RemoteArchive:
    """An archive the collector left on the host, with the checksum file beside it."""

    path: str
    checksum_path: str | None  # None: the collector wrote none
    algorithm: str  # hashlib name: md5 (supportconfig, Debian's sos), sha256 (ours)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


ARCHIVE_SUFFIX = r"\.(tar\.(xz|gz|bz2)|txz|tbz2?|tgz|tar)$"


def archive_stem(name: str) -> str:
    """`sosreport-x.tar.xz` -> `sosreport-x`: the directory it is unpacked into. A name
    the host chose must not make that directory `..` or one outside the bundle."""
    stem = re.sub(ARCHIVE_SUFFIX, "", name)
    if not BUNDLE_NAME.fullmatch(stem):
        raise SupportBundleBroken(f"archive {name!r}: not a plain file name")
    return stem


def archives_in(directory: str, names: list[str]) -> list[RemoteArchive]:
    """The archives among the file names a collector left, each with the checksum
    file it wrote beside it (sha256 or md5)."""
    archives = []
    for name in sorted(names):
        if re.search(ARCHIVE_SUFFIX, name):
            archive_stem(name)  # refused before it is fetched
            algorithm = next((hash_name for hash_name in CHECKSUMS
                              if f"{name}.{hash_name}" in names), None)
            archives.append(RemoteArchive(
                f"{directory}/{name}",
                f"{directory}/{name}.{algorithm}" if algorithm else None,
                algorithm or CHECKSUMS[0]))
    return archives


def read_checksum(path: Path) -> str:
    """The hex digest in a checksum file: alone (sos, supportconfig) or `digest  name`."""
    words = path.read_text(errors="replace").split()
    if not words or not re.fullmatch(r"[0-9a-fA-F]{32,128}", words[0]):
        raise SupportBundleBroken(f"{path}: no checksum in it (empty or not hex): the "
                                  "collector did not finish writing it")
    return words[0].lower()


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class _Limits:
    """Counts an archive's members as they come; raises once one passes a limit."""

    def __init__(self, archive: Path) -> None:
        self.archive, self.members, self.unpacked = archive, 0, 0

    def count(self, member: tarfile.TarInfo) -> None:
        self.members += 1
        self.unpacked += member.size
        if self.members > MAX_MEMBERS:
            raise SupportBundleBroken(f"{self.archive}: more than {MAX_MEMBERS} members")
        if member.size > MAX_MEMBER_BYTES:
            raise SupportBundleBroken(f"{self.archive}: member {member.name!r} has "
                                      f"{member.size} bytes, more than {MAX_MEMBER_BYTES}")
        if self.unpacked > MAX_UNPACKED_BYTES:
            raise SupportBundleBroken(f"{self.archive}: more than {MAX_UNPACKED_BYTES} "
                                      "bytes unpacked")


def check_archive_size(archive: str | Path, size: int) -> None:
    if size > MAX_ARCHIVE_BYTES:
        raise SupportBundleBroken(f"{archive}: {size} bytes, more than a support archive "
                                  f"may have ({MAX_ARCHIVE_BYTES})")


def read_to_end(archive: Path) -> int:
    """Read every member of the archive through to its end; return how many there are.
    A truncated or corrupt archive, or one past the limits, raises SupportBundleBroken."""
    count = 0
    check_archive_size(archive, archive.stat().st_size)
    limits = _Limits(archive)
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                limits.count(member)  # before reading: the header may claim terabytes
                count += 1
                if member.isfile():
                    stream = tar.extractfile(member)
                    assert stream is not None
                    while stream.read(1 << 20):
                        pass
    except (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error, OSError) as error:
        raise SupportBundleBroken(
            f"{archive}: does not read to its end after {count} members "
            f"({type(error).__name__}: {error}): truncated or corrupt; collect it again"
        ) from None
    if count == 0:
        raise SupportBundleBroken(f"{archive}: an archive with nothing in it")
    return count


def verify_archive(archive: Path, checksum_file: Path, algorithm: str) -> int:
    """The archive matches its checksum file and reads to its end; returns its member
    count. Raises SupportBundleBroken saying which check failed."""
    if not checksum_file.is_file():
        raise SupportBundleBroken(f"{archive}: its checksum file {checksum_file.name} is "
                                  "missing: the collector did not finish")
    expected = read_checksum(checksum_file)
    actual = file_digest(archive, algorithm)
    if actual != expected:
        raise SupportBundleBroken(
            f"{archive}: {algorithm} {actual} does not match {checksum_file.name} "
            f"({expected}): truncated or changed in transfer; collect it again")
    return read_to_end(archive)


def unpack(archive: Path, destination: Path) -> list[str]:
    """Unpack under `destination`; members with absolute names, that would land outside
    it, or device nodes, are left out (returned), the rest kept as in the archive. An
    archive past the limits raises SupportBundleBroken."""
    left_out: list[str] = []
    limits = _Limits(archive)
    check_archive_size(archive, archive.stat().st_size)

    def only_safe(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        limits.count(member)
        # data_filter strips a leading slash and keeps the member, and lets `..` through
        # where it ends in the destination itself (`../<destination's name>`).
        if member.name.startswith("/") or ".." in member.name.split("/"):
            left_out.append(f"{member.name} (absolute or with ..)")
            return None
        try:
            return tarfile.data_filter(member, path)
        except tarfile.FilterError as error:
            left_out.append(f"{member.name} ({type(error).__name__})")
            return None

    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:*") as tar:
        tar.extractall(destination, filter=only_safe)
    return left_out


@dataclass(frozen=True)
class IndexedFile:
    path: str  # relative to the bundle directory
    size: int


@dataclass
class SupportIndex:
    """What a bundle holds: its sections (sos plugin, supportconfig file, our Xen
    section), each with its files, and what the collector said it did not run."""

    sections: dict[str, list[IndexedFile]] = field(default_factory=dict)
    not_run: dict[str, str] = field(default_factory=dict)  # section -> why

    def files(self, section: str) -> list[IndexedFile]:
        return self.sections.get(section, [])

    def add(self, section: str, item: IndexedFile) -> None:
        self.sections.setdefault(section, []).append(item)

    def render(self) -> str:
        lines = []
        for section in sorted(self.sections):
            files = self.sections[section]
            total = sum(item.size for item in files)
            lines.append(f"[{section}] {len(files)} files, {total} bytes")
            lines.extend(f"  {item.size:>10}  {item.path}" for item in files)
        for section, reason in sorted(self.not_run.items()):
            lines.append(f"[{section}] not run: {reason}")
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        return json.dumps({
            "sections": {name: [[item.path, item.size] for item in files]
                         for name, files in sorted(self.sections.items())},
            "not_run": self.not_run,
        }, indent=1)


def _files_under(root: Path, base: Path) -> list[IndexedFile]:
    return [IndexedFile(str(path.relative_to(base)), path.lstat().st_size)
            for path in sorted(root.rglob("*"))
            if path.is_file() and not path.is_symlink()]


def index_sos(unpacked: Path, index: SupportIndex, base: Path) -> None:
    """sos: one section per plugin: its command outputs (sos_commands/<plugin>) and the
    files it copied (from sos_reports/manifest.json)."""
    for plugin_dir in sorted((unpacked / "sos_commands").glob("*")):
        for item in _files_under(plugin_dir, base):
            index.add(f"sos/{plugin_dir.name}", item)
    manifest = unpacked / "sos_reports" / "manifest.json"
    if manifest.is_file():
        inside = unpacked.resolve()
        for plugin, copied in _copied_files(manifest):
            path = unpacked / copied.lstrip("/")
            # The manifest is the host's word: a path in it may point anywhere.
            if (path.resolve().is_relative_to(inside) and path.is_file()
                    and not path.is_symlink()):
                index.add(f"sos/{plugin}", IndexedFile(
                    str(path.relative_to(base)), path.lstat().st_size))


def _copied_files(manifest: Path) -> list[tuple[str, str]]:
    """(plugin, path) of each file sos says it copied, from its manifest.json."""
    try:
        plugins = json.loads(manifest.read_text(errors="replace")).get("components", {}).get(
            "report", {}).get("plugins", {})
        return [(str(plugin), str(copied)) for plugin, data in plugins.items()
                for spec in data.get("files", []) for copied in spec.get("files_copied", [])]
    except (ValueError, TypeError, AttributeError) as error:
        raise SupportBundleBroken(f"{manifest}: not a sos manifest ({type(error).__name__}: "
                                  f"{error})") from None


def index_supportconfig(unpacked: Path, index: SupportIndex, base: Path) -> None:
    """supportconfig: one section per text file (basic-environment.txt,
    plugin-xen.txt, ...). Unrun: no SUSE host in the virtual lab."""
    for path in sorted(unpacked.rglob("*.txt")):
        section = f"supportconfig/{path.stem}"
        index.add(section, IndexedFile(str(path.relative_to(base)), path.stat().st_size))


def index_xen_section(unpacked: Path, index: SupportIndex, base: Path) -> None:
    skipped = unpacked / SKIPPED
    if skipped.is_file():
        index.not_run[XEN_SECTION] = skipped.read_text().strip()
        return
    for item in _files_under(unpacked, base):
        index.add(XEN_SECTION, item)


@dataclass(frozen=True)
class Collector(ABC):
    """One collector tool: its commands, what they leave on the host."""

    tool: str

    @abstractmethod
    def commands(self, name: str, directory: str) -> list[str]:
        """Shell commands that leave the bundle's archives in `directory`."""


@dataclass(frozen=True)
class _Supportconfig(Collector):
    def commands(self, name: str, directory: str) -> list[str]:
        # -Q quiet; -B the tarball's name (scc_<name>); -R where it goes.
        return [f"supportconfig -Q -B {shlex.quote(name)} -R {shlex.quote(directory)}"]


@dataclass(frozen=True)
class _Sos(Collector):
    def commands(self, name: str, directory: str) -> list[str]:
        return [
            f"sos report --batch --quiet --tmp-dir {shlex.quote(directory)} "
            f"--label {shlex.quote(name)} --only-plugins {','.join(SOS_PLUGINS)}",
            xen_section_script(name, directory),
        ]


COLLECTORS: dict[SupportCollector, Collector] = {
    "supportconfig": _Supportconfig("supportconfig"),
    "sos": _Sos("sos"),
}


def collector_for(family: str) -> Collector:
    try:
        return COLLECTORS[distro(family).support_collector]
    except ConfigError:
        # Names what was wanted, not only that the family is unknown.
        raise ConfigError(f"no support collector for distro family {family!r}; known: "
                          f"{', '.join(FAMILIES)}") from None


def xen_section_script(name: str, directory: str) -> str:
    """A shell script: the Xen section into <directory>/xen-<name>/, one file per item
    plus exit-codes.txt, archived as xen-<name>.tar.gz (no xz in a minimal Debian) with
    a .sha256. On a host that is
    not a Xen dom0 it writes only SKIPPED with the reason (supportconfig's plugin exits
    111 there)."""
    section = f"xen-{name}"
    out = f"{directory}/{section}"
    lines = [f"set -u; out={shlex.quote(out)}; mkdir -p \"$out\""]
    lines.append(
        "if ! grep -qs control_d /proc/xen/capabilities; then "
        "echo \"not a Xen dom0: /proc/xen/capabilities is $(cat /proc/xen/capabilities "
        "2>/dev/null || echo missing); $(command -v xl >/dev/null && echo 'xl installed' "
        "|| echo 'no xl')\" > \"$out/SKIPPED\"; else")
    for file_name, command in XEN_COMMANDS.items():
        lines.append(f"  ( {command} ) > \"$out/{file_name}\" 2>&1; "
                     f"echo \"$? {file_name}\" >> \"$out/exit-codes.txt\";")
    for target, source in XEN_DIRECTORIES.items():
        lines.append(f"  cp -a {source} \"$out/{target}\" 2>>\"$out/copy-errors.txt\";")
    lines.append("fi")
    archive = shlex.quote(f"{directory}/{section}.tar.gz")
    lines.append(f"tar -C {shlex.quote(directory)} -czf {archive} {shlex.quote(section)} && "
                 f"sha256sum {archive} | cut -d' ' -f1 > {archive}.sha256")
    return "\n".join(lines)


@dataclass
class SupportBundle:
    """A bundle collected from one host, checked and unpacked."""

    host: str
    name: str
    directory: Path  # reports/<run-id>/support/<host>/<name>/
    archives: list[Path]
    index: SupportIndex
    collect_seconds: float
    total_seconds: float
    left_out: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(path.stat().st_size for path in self.archives)

    def summary(self) -> str:
        return (f"support bundle of {self.host}: {len(self.archives)} archive(s), "
                f"{self.size / 1024:.0f} KiB, collected in {self.collect_seconds:.0f} s "
                f"({self.total_seconds:.0f} s with fetch, checks and unpacking), "
                f"in {self.directory}")

    def render(self) -> str:
        lines = [self.summary(), ""]
        lines += [f"archive: {path.name} ({path.stat().st_size} bytes)"
                  for path in self.archives]
        if self.left_out:
            lines.append("left out when unpacking: " + ", ".join(self.left_out))
        return "\n".join(lines) + "\n\n" + self.index.render()


def bundle_name(host: str) -> str:
    # sos keeps only [-a-zA-Z.0-9] of a label; the name is also a local directory.
    return f"{re.sub(r'[^A-Za-z0-9.-]', '-', host)}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


def check_bundle_name(name: str) -> str:
    """The name is a directory here and on the host: one plain component."""
    if not BUNDLE_NAME.fullmatch(name):
        raise ConfigError(f"support bundle name {name!r}: not a plain file name "
                          "(letters, digits, ., _ and -, not starting with . or -)")
    return name


def collect(remote: RemoteHost, family: str, destination: Path, *, timeout: float,
            name: str | None = None) -> SupportBundle:
    """Run the family's collector on the host (within `timeout` seconds in all), fetch
    its archives into `destination`/<name>/, check, unpack and index them."""
    collector = collector_for(family)
    name = check_bundle_name(name or bundle_name(remote.name))
    directory = f"{REMOTE_ROOT}/{name}"
    bundle_dir = destination / name
    started = time.monotonic()
    deadline = started + timeout
    log.info("%s: collecting a support bundle with %s (up to %.0f s)", remote.name,
             collector.tool, timeout)
    remote.run(f"rm -rf {shlex.quote(REMOTE_ROOT)} && mkdir -p {shlex.quote(directory)}")
    for command in collector.commands(name, directory):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SupportBundleBroken(f"{remote.name}: {collector.tool} did not finish "
                                      f"within {timeout:.0f} s")
        result = remote.run(command, timeout=remaining, check=False)
        if not result.ok:
            status = ("timed out" if result.exit_status is None
                      else f"exited {result.exit_status}")
            raise SupportBundleBroken(
                f"{remote.name}: {command.splitlines()[0][:80]} {status}: "
                f"{(result.stderr or result.stdout).strip()[-1000:]}")
    collect_seconds = time.monotonic() - started
    archives = archives_in(directory, remote.run(f"ls -1 {shlex.quote(directory)}").stdout.split())
    if not archives:
        raise SupportBundleBroken(f"{remote.name}: {collector.tool} left no archive in "
                                  f"{directory}")
    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)
    bundle_dir.mkdir(parents=True)
    index, fetched, left_out = SupportIndex(), [], []
    for archive in archives:
        local = bundle_dir / archive.name
        checksum = bundle_dir / f"{archive.name}.{archive.algorithm}"
        check_archive_size(archive.path, remote.stat_size(archive.path) or 0)
        remote.get(archive.path, local)
        if archive.checksum_path is not None:  # else verify_archive says it is missing
            remote.get(archive.checksum_path, checksum)
        members = verify_archive(local, checksum, archive.algorithm)
        unpacked = bundle_dir / archive_stem(archive.name)
        left_out += unpack(local, unpacked)
        log.info("%s: %s: %d bytes, %d members, %s checked", remote.name, archive.name,
                 local.stat().st_size, members, archive.algorithm)
        index_archive(unpacked, index, bundle_dir)
        fetched.append(local)
    remote.run(f"rm -rf {shlex.quote(REMOTE_ROOT)}")
    bundle = SupportBundle(remote.name, name, bundle_dir, fetched, index,
                           collect_seconds, time.monotonic() - started, left_out)
    (bundle_dir / "index.txt").write_text(bundle.render())
    (bundle_dir / "index.json").write_text(index.to_json())
    log.info("%s", bundle.summary())
    return bundle


def index_archive(unpacked: Path, index: SupportIndex, base: Path) -> None:
    """Index one unpacked archive by what made it (the archive's top directory)."""
    for top in sorted(unpacked.iterdir()):
        if top.name.startswith("sosreport-"):
            index_sos(top, index, base)
        elif top.name.startswith("xen-"):
            index_xen_section(top, index, base)
        elif top.name.startswith("scc_"):
            index_supportconfig(top, index, base)
