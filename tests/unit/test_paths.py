"""Where labs/ and testsuites/ are found: the checkout, else the copy inside the package."""

from __future__ import annotations

from pathlib import Path

import pytest

import harness.paths
from harness.paths import PROJECT_ROOT, data_root, labs_dir


def test_checkout_is_used_when_running_from_one() -> None:
    assert data_root() == PROJECT_ROOT
    assert (labs_dir() / "vlab.yaml").is_file()
    assert (data_root() / "testsuites" / "boot").is_dir()


def test_installed_package_uses_its_own_copy(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setattr(harness.paths, "PROJECT_ROOT", tmp_path)  # site-packages: no pyproject
    package = Path(harness.paths.__file__).resolve().parent
    assert data_root() == package / "data"
    assert labs_dir() == package / "data" / "labs"
