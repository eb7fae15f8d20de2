"""Helpers of the lock tests: a lab file with places and tags, a real labgrid
coordinator on loopback, and fake runs as processes of their own."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import yaml

from harness.lab import DEFAULT_LAB, Lab, load_lab
from harness.paths import PROJECT_ROOT

COORDINATOR = Path(sys.executable).parent / "labgrid-coordinator"


def lab_with_places(tmp_path: Path, **options: object) -> Lab:
    """labs/vlab.yaml with `options` under xenhil (its places: vlab-vlab1, vlab-vlab2)."""
    data = yaml.safe_load(DEFAULT_LAB.read_text())
    data["xenhil"].update(options)
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_lab(path, check_files=False)


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
def fake_run(lab: Lab, hosts: str, coordinator: str | None = None,
             env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """tests/unit/lock_runner.py holding `hosts`, once it says so; stopped afterwards."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.unit.lock_runner", str(lab.path), hosts,
         *([coordinator] if coordinator else [])],
        cwd=PROJECT_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        line = _read_line(process.stdout, timeout=60)
        assert line == "locked\n", f"{line!r}; stderr: {_rest(process)}"
        yield process
    finally:
        stop(process)


def _read_line(stream: IO[str], timeout: float) -> str:
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return stream.readline()


def _rest(process: subprocess.Popen[str]) -> str:
    stop(process)
    return process.stderr.read() if process.stderr else ""
