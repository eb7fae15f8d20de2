"""A real labgrid coordinator on loopback, for the unit and the end-to-end tests."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

COORDINATOR = Path(sys.executable).parent / "labgrid-coordinator"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop(process: subprocess.Popen[str]) -> None:
    """End a process we started, by its PID: politely, then for certain."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextlib.contextmanager
def running_coordinator(directory: Path) -> Iterator[str]:
    """labgrid-coordinator on 127.0.0.1, its places.yaml in `directory`; its HOST:PORT."""
    address = f"127.0.0.1:{free_port()}"
    log = directory / "coordinator.log"
    with log.open("w") as output:
        process = subprocess.Popen([str(COORDINATOR), "--listen", address], cwd=directory,
                                   stdout=output, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while "listening on" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"labgrid-coordinator did not start: {log.read_text()}")
            time.sleep(0.1)
        yield address
    finally:
        stop(process)
