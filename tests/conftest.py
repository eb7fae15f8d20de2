"""Fixtures shared by the unit and the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .coordinator import running_coordinator


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[str]:
    """A real labgrid coordinator on loopback for one test; its HOST:PORT."""
    directory = tmp_path / "coordinator"
    directory.mkdir()
    with running_coordinator(directory) as address:
        yield address
