"""A fake run for the lock tests, as a process of its own: it holds hosts through
harness.locking.hold_hosts, says `locked`, and ends when a line comes on its stdin.

    python -m tests.unit.lock_runner LAB HOSTS [COORDINATOR]
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.lab import load_lab
from harness.locking import hold_hosts


def main(lab_path: str, hosts: str, coordinator: str | None = None) -> None:
    lab = load_lab(Path(lab_path), check_files=False)
    with hold_hosts(lab, hosts.split(","), 1.0, coordinator, run_id="child-run"):
        print("locked", flush=True)
        sys.stdin.readline()


if __name__ == "__main__":
    main(*sys.argv[1:])
