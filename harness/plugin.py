"""The pytest plugin: options, markers and fixtures of the harness, all in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from .lab import DEFAULT_LAB, Lab, load_lab


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xenhil", "xen-hil: Xen hardware-in-the-loop")
    group.addoption("--lab", type=Path, default=DEFAULT_LAB,
                    help="lab file (default: labs/vlab.yaml)")


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest) -> Lab:
    """The validated lab file given with --lab."""
    return load_lab(request.config.getoption("--lab"))
