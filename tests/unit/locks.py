"""Helpers of the lock tests: a lab file with places and tags, and fake runs as
processes of their own (the coordinator: tests/coordinator.py)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import yaml

from harness.lab import DEFAULT_LAB, Lab, load_lab
from harness.paths import PROJECT_ROOT

from ..coordinator import stop


def lab_with_places(tmp_path: Path, **options: object) -> Lab:
    """labs/vlab.yaml with `options` under xenhil (its places: vlab-vlab1, vlab-vlab2)."""
    data = yaml.safe_load(DEFAULT_LAB.read_text())
    data["xenhil"].update(options)
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_lab(path, check_files=False)


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


@contextlib.contextmanager
def held_flock(path: Path) -> Iterator[None]:
    """Another process holding an exclusive flock on `path`, once it says so."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'w'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
         str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = _read_line(process.stdout, timeout=30)
        assert line == "held\n", f"{line!r}; stderr: {_rest(process)}"
        yield
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
