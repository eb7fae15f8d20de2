"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .sshserver import SSHServer


@pytest.fixture
def ssh_server(tmp_path: Path) -> Iterator[SSHServer]:
    """A real SSH server on loopback (paramiko's server side), stopped afterwards."""
    server = SSHServer(tmp_path)
    try:
        yield server
    finally:
        server.close()
