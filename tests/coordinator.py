"""A real labgrid coordinator on loopback, for the unit and the end-to-end tests, and
real labgrid-exporters connected to it."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

COORDINATOR = Path(sys.executable).parent / "labgrid-coordinator"
EXPORTER = Path(sys.executable).parent / "labgrid-exporter"


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


@contextlib.contextmanager
def running_exporter(directory: Path, coordinator: str, name: str,
                     groups: Mapping[str, Mapping[str, Any]]) -> Iterator[subprocess.Popen[str]]:
    """labgrid-exporter `name` serving `groups` (its config: group, resource class,
    parameters) through `coordinator`, once the coordinator has every resource of it."""
    from harness.locking import Coordinator

    directory.mkdir(parents=True, exist_ok=True)
    config = directory / f"{name}.yaml"
    config.write_text(yaml.safe_dump({group: dict(resources)
                                      for group, resources in groups.items()}))
    log = directory / f"{name}.log"
    with log.open("w") as output:
        # --hostname: what it publishes for resources it serves itself (not ours), and
        # never the machine's name, which may resolve off loopback.
        process = subprocess.Popen([str(EXPORTER), "--coordinator", coordinator, "--name", name,
                                    "--hostname", "127.0.0.1", str(config)],
                                   cwd=directory, stdout=output, stderr=subprocess.STDOUT,
                                   text=True)
    expected = {group: set(resources) for group, resources in groups.items()}
    client = Coordinator(coordinator, "test/exporter-wait:0")

    async def served() -> dict[str, set[str]]:
        async with client.connect() as connection:
            return {group: {resource for resource, entry in entries.items()
                            if "cls" in entry.data}
                    for group, entries in connection.resources.get(name, {}).items()}

    try:
        deadline = time.monotonic() + 30
        while client.run(served()) != expected:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"labgrid-exporter {name} did not serve {expected}: "
                                   f"{log.read_text()}")
            time.sleep(0.1)
        yield process
    finally:
        stop(process)
