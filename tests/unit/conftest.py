"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.console_server import Ser2net, console_server

from .sshserver import SSHServer
from .test_com1 import ConsoleServer, free_port


@pytest.fixture
def ssh_server(tmp_path: Path) -> Iterator[SSHServer]:
    """A real SSH server on loopback (paramiko's server side), stopped afterwards."""
    server = SSHServer(tmp_path)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def com1() -> Iterator[ConsoleServer]:
    """The host's UART, as the machine end of the serial line."""
    server = ConsoleServer()
    yield server
    server.close()


@pytest.fixture
def ser2net(tmp_path: Path, com1: ConsoleServer) -> Iterator[Ser2net]:
    """A real ser2net in RFC 2217 mode in front of `com1`, stopped afterwards."""
    with console_server(("127.0.0.1", com1.port), "127.0.0.1", free_port(), tmp_path,
                        settle=1.0) as server:
        yield server
