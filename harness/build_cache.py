"""Build artifacts cached under the cache directory (the virtual lab's image and Xen
builds, the test guest's image), and the commands their builds run.

Each artifact has a stamp with the hash of its recipe; it is built in a temporary
directory and moved into place at the end, the stamp last, so an interrupted build
never leaves an artifact that looks valid. One build at a time per cache directory.
"""

from __future__ import annotations

import fcntl
import json
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

LOG_TAIL = 25  # lines of a failed command's output shown in its error
# A first image build takes about 3 minutes; one another process runs is waited for.
BUILD_LOCK_TIMEOUT = 3600.0


class VlabBuildError(RuntimeError):
    """Building a virtual lab artifact failed; the message says what to fix."""


def dom0_dpkg_status(cache: Path) -> Path:
    """The package list of the virtual lab's dom0 image under `cache`; the guest image
    takes its kernel from it."""
    return cache / "vlab" / "image" / "dpkg-status"


@contextmanager
def cache_lock(root: Path) -> Iterator[None]:
    """Serializes builds in one cache directory across processes."""
    with file_lock(root / ".lock", BUILD_LOCK_TIMEOUT, f"another build in {root}",
                   VlabBuildError):
        yield


@contextmanager
def file_lock(path: Path, timeout: float, holder: str,
              error: Callable[[str], Exception]) -> Iterator[None]:
    """An exclusive lock on `path` between processes, waited for up to `timeout`
    seconds; then `error` names the file and who holds it (`holder`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        deadline = time.monotonic() + timeout
        waiting = False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise error(f"{path}: still locked after {timeout:.0f} s by "
                                f"{holder}") from None
                if not waiting:
                    log.info("waiting for %s (%s)", holder, path)
                    waiting = True
                time.sleep(0.1)
        yield


def stamp_matches(stamp: Path, recipe: str, artifacts: tuple[Path, ...]) -> bool:
    try:
        recorded = json.loads(stamp.read_text()).get("recipe")
    except (OSError, ValueError):
        return False
    return recorded == recipe and all(p.exists() for p in artifacts)


def publish(
    staged: Mapping[Path, Path], stamp: Path, recipe: str, info: Mapping[str, object]
) -> None:
    """Moves each staged directory into place, replacing the old one, then writes the
    stamp: the old stamp goes first, so nothing looks valid in between."""
    stamp.unlink(missing_ok=True)
    for src, dest in staged.items():
        if dest.exists():
            remove_tree(dest)
        src.rename(dest)
    tmp = stamp.with_name(stamp.name + ".tmp")
    tmp.write_text(json.dumps({"recipe": recipe, "built": time.time(), **info}, indent=1))
    tmp.replace(stamp)


def remove_stale_temps(root: Path, prefix: str) -> None:
    """Removes temporary directories of interrupted builds (the caller holds the lock)."""
    for stale in root.glob(prefix + "*"):
        if stale.is_dir():
            log.info("removing %s, left by an interrupted build", stale)
            remove_tree(stale)


def remove_tree(path: Path) -> None:
    """rmtree that first unmounts what an interrupted debootstrap left mounted below
    `path`: removing through a mount would delete the host's files."""
    for mount in sorted(mounts_below(path), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", mount], check=False)
    if still := mounts_below(path):
        raise VlabBuildError(f"cannot remove {path}: still mounted: {', '.join(still)}; "
                             "unmount them by hand")
    if path.exists():
        shutil.rmtree(path)


def mounts_below(path: Path) -> list[str]:
    base = str(path.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # field 5 is the mount point, with octal escapes for spaces and the like
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4])
        if point == base or point.startswith(base + "/"):
            found.append(point)
    return found


def run(cmd: list[str], *, what: str, stdin: str | None = None) -> str:
    """Runs `cmd` and returns its stdout; on failure raises VlabBuildError with the
    tail of its output."""
    log.debug("running %s", cmd)
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise VlabBuildError(
            f"{what} failed (exit {proc.returncode}): {tail(proc.stdout + proc.stderr)}"
        )
    return proc.stdout


@contextmanager
def stage(name: str, logger: logging.Logger = log) -> Iterator[None]:
    logger.info("%s ...", name)
    started = time.monotonic()
    yield
    logger.info("%s done in %.0f s", name, time.monotonic() - started)


def require_tools(tools: Mapping[str, str]) -> None:
    missing = {tool: pkg for tool, pkg in tools.items() if shutil.which(tool) is None}
    if missing:
        raise VlabBuildError(
            f"missing tools: {', '.join(missing)}; install them with "
            f"apt-get install {' '.join(sorted(set(missing.values())))}"
        )


def tail(text: str, lines: int = LOG_TAIL) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])
