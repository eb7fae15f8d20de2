"""Find the Xen entry of a build in a generated grub.cfg (as osstest does).

grub.cfg nests `menuentry` inside `submenu`; GRUB's `default` names an entry in a
submenu by the path of ids from the top, joined by `>` (GRUB manual, "default").
GRUB_DEFAULT sets it, or with GRUB_DEFAULT=saved grubenv's saved_entry does. An entry
boots Xen when it loads a hypervisor with `multiboot2`/`multiboot` and the dom0 kernel
with `module2`/`module`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from .errors import HarnessError


class GrubEntryNotFound(HarnessError):
    """No boot entry loads the build's hypervisor."""


@dataclass(frozen=True)
class GrubEntry:
    titles: tuple[str, ...]  # submenu titles, then the entry's own
    ids: tuple[str, ...]
    hypervisor: str | None  # path given to multiboot2/multiboot
    kernel: str | None  # dom0 kernel (module2 under Xen, linux otherwise)
    xen_args: str = ""

    @property
    def default_path(self) -> str:
        """The value for saved_entry or GRUB_DEFAULT (ids are stable across
        regenerations, titles too)."""
        return ">".join(self.ids)

    @property
    def title(self) -> str:
        return " > ".join(self.titles)


_OPEN = re.compile(r"^\s*(menuentry|submenu)\s+(.*)\{\s*$")


def _title_and_id(rest: str) -> tuple[str, str]:
    words = shlex.split(rest.replace("$menuentry_id_option", "--id"), posix=True)
    title = words[0]
    entry_id = title
    if "--id" in words:
        entry_id = words[words.index("--id") + 1]
    return title, entry_id


def parse_grub_cfg(text: str) -> list[GrubEntry]:
    """Every menuentry in menu order, with the submenus it sits in."""
    entries: list[GrubEntry] = []
    stack: list[tuple[str, str, str]] = []  # (kind, title, id)
    current: dict[str, str] = {}
    depth_of_entry: int | None = None
    depth = 0
    for line in text.splitlines():
        stripped = line.strip()
        opened = _OPEN.match(line)
        if opened:
            kind, rest = opened.groups()
            title, entry_id = _title_and_id(rest)
            stack.append((kind, title, entry_id))
            depth += 1
            if kind == "menuentry":
                depth_of_entry = depth
                current = {}
            continue
        if depth_of_entry is not None and depth == depth_of_entry:
            words = stripped.split(None, 2)
            command = words[0] if len(words) > 1 else ""
            if command in ("multiboot2", "multiboot"):
                current["hypervisor"] = words[1]
                current["xen_args"] = words[2] if len(words) > 2 else ""
            # Under Xen the first module is the dom0 kernel; the initrd follows it.
            elif command == "linux" or (command in ("module2", "module")
                                        and "kernel" not in current):
                current["kernel"] = words[1]
        if stripped.startswith("}") and stack:
            kind, _title, _id = stack[-1]
            if kind == "menuentry" and depth == depth_of_entry:
                entries.append(GrubEntry(
                    titles=tuple(item[1] for item in stack),
                    ids=tuple(item[2] for item in stack),
                    hypervisor=current.get("hypervisor"),
                    kernel=current.get("kernel"),
                    xen_args=current.get("xen_args", ""),
                ))
                depth_of_entry = None
            stack.pop()
            depth -= 1
    return entries


def find_xen_entry(entries: list[GrubEntry], hypervisor: str) -> GrubEntry:
    """The first entry, in menu order, that boots `hypervisor` (a path under /boot).

    The first such entry is the one with the newest dom0 kernel (grub-mkconfig sorts
    kernels newest first)."""
    wanted = hypervisor.rsplit("/", 1)[-1]
    for entry in entries:
        if entry.hypervisor and entry.hypervisor.rsplit("/", 1)[-1] == wanted:
            return entry
    booting_xen = sorted({e.hypervisor for e in entries if e.hypervisor})
    raise GrubEntryNotFound(
        f"no GRUB entry boots {hypervisor}; entries boot: "
        f"{', '.join(booting_xen) or 'no hypervisor at all'}")


def parse_saved_entry(grubenv: str) -> str | None:
    """saved_entry in `grub-editenv FILE list` output; None if unset."""
    for line in grubenv.splitlines():
        name, equals, value = line.partition("=")
        if equals and name == "saved_entry":
            return value
    return None
