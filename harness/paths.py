"""Where the harness keeps things, and how lab files name them."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """The directory holding labs/ and testsuites/.

    From a checkout (editable install, PYTHONPATH) that is the checkout itself, recognised
    by its pyproject.toml next to the package, so edits there take effect at once. An
    installed wheel has no checkout: setup.py copies both into the package as
    harness/data/ when it builds the wheel.
    """
    if (PROJECT_ROOT / "pyproject.toml").is_file():
        return PROJECT_ROOT
    return Path(__file__).resolve().parent / "data"


def scenario_paths(tests: Sequence[str]) -> list[str]:
    """Test ids or paths relative to the harness's root (testsuites/boot/test_boot.py),
    as pytest takes them."""
    return [str(data_root() / test) for test in tests]


def labs_dir() -> Path:
    """The lab files shipped with the harness (vlab.yaml, example-lab.yaml)."""
    return data_root() / "labs"

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def cache_dir() -> Path:
    """Images, builds and virtual-lab state: $XENHIL_CACHE, else ~/.cache/xen-hil."""
    configured = os.environ.get("XENHIL_CACHE")
    if configured:
        return Path(configured).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "xen-hil"


class UnknownVariable(KeyError):
    """A lab file refers to ${NAME} and NAME is neither set nor one of ours."""


def expand(value: str) -> str:
    """Expand ${NAME} from the environment (XENHIL_CACHE has a default) and a leading ~."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "XENHIL_CACHE":
            return str(cache_dir())
        if name in os.environ:
            return os.environ[name]
        raise UnknownVariable(name)

    return os.path.expanduser(_VARIABLE.sub(substitute, value))


def lab_file_path(value: str, lab_dir: Path) -> Path:
    """A file a lab file names: ${NAME}s and ~ expanded, a relative path taken from the
    lab file's directory (`lab_dir`), as the lab check does and the drivers must."""
    path = Path(expand(value))
    return path if path.is_absolute() else (lab_dir / path).resolve()
