"""An initramfs written by the harness: a gzip-compressed cpio archive in the "newc"
format the kernel unpacks (see the kernel's Documentation/driver-api/early-userspace).

Written in Python rather than with find | cpio: owners are root and times are zero
whoever builds it (no root needed, same bytes for the same content), and device
nodes such as /dev/console go in without mknod.
"""

from __future__ import annotations

import gzip
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    mode: int  # file type and permission bits, as in st_mode
    data: bytes = b""  # file content, or a symlink's target
    rdev: tuple[int, int] = (0, 0)  # major, minor of a device node


class Initramfs:
    """The tree of an initramfs, built in memory; parent directories appear by
    themselves (mode 0755)."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def _add(self, path: str, entry: Entry) -> None:
        clean = str(PurePosixPath("/", path)).lstrip("/")
        if not clean or ".." in PurePosixPath(clean).parts:
            raise ValueError(f"bad initramfs path {path!r}")
        parent = str(PurePosixPath(clean).parent)
        if parent != "." and parent not in self.entries:
            self.directory(parent)
        existing = self.entries.get(clean)
        if existing is not None and not (stat.S_ISDIR(existing.mode) and stat.S_ISDIR(entry.mode)):
            raise ValueError(f"initramfs path {clean} added twice")
        self.entries[clean] = entry

    def directory(self, path: str, mode: int = 0o755) -> None:
        self._add(path, Entry(stat.S_IFDIR | mode))

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._add(path, Entry(stat.S_IFREG | mode, data))

    def copy(self, path: str, source: Path, mode: int | None = None) -> None:
        """A regular file with the content of `source` (symlinks followed)."""
        self.file(path, source.read_bytes(),
                  stat.S_IMODE(source.stat().st_mode) if mode is None else mode)

    def symlink(self, path: str, target: str) -> None:
        self._add(path, Entry(stat.S_IFLNK | 0o777, target.encode()))

    def char_device(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._add(path, Entry(stat.S_IFCHR | mode, rdev=(major, minor)))

    def __contains__(self, path: str) -> bool:
        return path.lstrip("/") in self.entries

    def cpio(self) -> bytes:
        """The uncompressed newc archive; parents come before their contents."""
        out = bytearray()
        for inode, name in enumerate(sorted(self.entries), start=1):
            out += _member(name, self.entries[name], inode)
        out += _member(TRAILER, Entry(0), 0)
        return bytes(out)

    def write(self, path: Path) -> int:
        """Writes the gzip-compressed archive to `path`; returns its size in bytes."""
        data = gzip.compress(self.cpio(), compresslevel=9, mtime=0)
        path.write_bytes(data)
        return len(data)


def _member(name: str, entry: Entry, inode: int) -> bytes:
    encoded = name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (inode, entry.mode, 0, 0, nlink, 0, len(entry.data), 0, 0,
              entry.rdev[0], entry.rdev[1], len(encoded), 0)
    header = b"070701" + b"".join(b"%08X" % value for value in fields)
    return _pad(header + encoded) + _pad(entry.data)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)
