"""Benchmark: a whole `xenhil run` on the virtual lab, and where its time went.

Runs the default profile (what `make run` does) unless --run-id names a finished run,
then prints, from the results database and the run's reports:
  - wall time, the tests' time added up, and per area: tests, passed, skipped, time in
    tests;
  - migration time and downtime per guest type (every move of every migration test);
  - com1 bytes captured vs QEMU's own chardev log, per host (goal: exactly 1.000,
    byte-identical);
  - where the time went (harness.run_profile): per test, seconds of boot, install,
    guest create, migration pairing, leak check, failure diagnosis, other fixtures and
    test body; the tests that took longest; totals per phase, the run's time outside
    its tests, and how much faster tests of several hosts side by side went.
Exits non-zero if the run did not pass or a com1 log differs from QEMU's.

    .venv/bin/python bench/run_figures.py [--run-id ID]   (make bench runs it first)
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from harness.lab import DEFAULT_LAB, load_lab
from harness.results.db import ResultsDB, resolve_url
from harness.results.records import ResultRecord, RunRecord
from harness.run_profile import PHASES, RunProfile, TestProfile, read_profile
from harness.vlab import control

# A migration test's id ends with its guest type: test_...[vlab1-vlab2-pvh].
GUEST_TYPE = re.compile(r"-(pv|pvh|hvm)\]$")
MOVE_FIGURE = re.compile(r"^migrate .*: (time|downtime)(?: \(\d+\))?$")


def per_area(run: RunRecord) -> None:
    areas: dict[str, list[ResultRecord]] = defaultdict(list)
    for result in run.results:
        areas[result.area or "(none)"].append(result)
    wall = (run.ended - run.started).total_seconds() if run.ended and run.started else 0.0
    in_tests = sum(result.duration_s for result in run.results)
    print(f"run {run.id}: {run.verdict}, wall time {wall / 60:.1f} min; its tests took "
          f"{in_tests / 60:.1f} min added up (tests of hosts side by side overlap: see "
          "the time profile below)")
    print(f"  {'area':<14} {'tests':>5} {'passed':>6} {'skipped':>7} {'time':>8}")
    for area, results in sorted(areas.items(), key=lambda item: -sum(
            result.duration_s for result in item[1])):
        seconds = sum(result.duration_s for result in results)
        passed = sum(result.status == "passed" for result in results)
        skipped = sum(result.status == "skipped" for result in results)
        print(f"  {area:<14} {len(results):>5} {passed:>6} {skipped:>7} {seconds:>7.0f}s")


def migrations(run: RunRecord) -> None:
    moves: dict[tuple[str, str], list[float]] = defaultdict(list)
    for result in run.results:
        typed = GUEST_TYPE.search(result.test_id)
        for figure in result.figures:
            measured = MOVE_FIGURE.match(figure.name)
            if typed and measured:
                moves[(typed.group(1), measured.group(1))].append(figure.value)
    if not moves:
        print("migrations: none in this run")
        return
    print("migrations per guest type (every move of every live-migration test):")
    for (kind, what), values in sorted(moves.items()):
        print(f"  {kind.upper():<4} {what:<9} {len(values):>3} moves: mean "
              f"{statistics.mean(values):6.2f} s, min {min(values):6.2f} s, "
              f"max {max(values):6.2f} s")


def com1_ratio(run_id: str, reports_root: Path) -> bool:
    lab = load_lab(DEFAULT_LAB, check_files=False)
    identical = True
    print("com1 captured vs QEMU's chardev log:")
    for host in control.virtual_hosts(lab):
        ours_path = reports_root / run_id / "com1" / f"{host.name}.raw"
        qemu_path = host.run_dir / "com1-qemu.log"
        if not ours_path.is_file() or not qemu_path.is_file():
            print(f"  {host.name}: not in this run")
            continue
        ours, qemu = ours_path.read_bytes(), qemu_path.read_bytes()
        same = ours == qemu
        identical &= same
        print(f"  {host.name}: {len(ours)} / {len(qemu)} bytes = "
              f"{len(ours) / max(len(qemu), 1):.3f}, {'byte-identical' if same else 'DIFFERENT'}")
    return identical


# The phases as columns, in the order a test goes through them; heads of 6 characters.
COLUMNS = {"boot": "boot", "install": "inst", "pairing": "pair", "guest create": "create",
           "body": "body", "leak check": "leaks", "diagnosis": "diagn", "fixtures": "fixt"}
NAME_WIDTH = 35  # 2 + 35 + 9 columns of 7 = 100


def _row(name: str, cells: list[str]) -> str:
    if len(name) > NAME_WIDTH:
        name = name[:NAME_WIDTH - 1] + "~"
    return f"  {name:<{NAME_WIDTH}}" + "".join(f"{cell:>7}" for cell in cells)


def _seconds(value: float) -> str:
    return f"{value:.1f}" if value >= 0.05 else "-"


def _test_row(test: TestProfile) -> str:
    return _row(test.name, [_seconds(test.total),
                            *(_seconds(test.phases.get(phase, 0.0)) for phase in COLUMNS)])


def profile_table(profile: RunProfile, top: int = 10) -> list[str]:
    """The profile as text lines within 100 columns: every test in run order, the
    `top` longest, the totals per phase and the time outside tests."""
    head = _row("test", ["total", *COLUMNS.values()])
    lines = ["where the time went, per test, in seconds (inst: install, pair: migration "
             "pairing,", "create: guest create, leaks: leak check, diagn: diagnosis on "
             "failure, fixt: other", "setup and teardown):", head]
    lines += [_test_row(test) for test in profile.tests]
    longest = sorted(profile.tests, key=lambda test: -test.total)[:top]
    lines += [f"the {len(longest)} longest tests:", head]
    lines += [_test_row(test) for test in longest]
    totals = profile.totals()
    wall = profile.in_tests + sum(profile.outside.values())
    lines.append(f"totals: {wall:.0f} s, of which {profile.in_tests:.0f} s in "
                 f"{len(profile.tests)} tests:")
    rows = [*sorted(((phase, totals[phase]) for phase in PHASES), key=lambda row: -row[1]),
            *((f"outside tests: {what}", seconds) for what, seconds in profile.outside.items())]
    lines += [f"  {what:<42} {seconds:7.1f} s {100 * seconds / wall:5.1f} %"
              for what, seconds in rows]
    summed, in_tests = profile.summed, profile.in_tests
    if summed > in_tests + 1:
        lines += [f"side by side: {summed:.0f} s of tests (the phases above, added up) "
                  f"ran in {in_tests:.0f} s,",
                  f"  {summed / in_tests:.2f} times as fast as one after the other: "
                  f"{summed - in_tests:.0f} s on one host while another ran its own tests"]
    return lines


def time_profile(run: RunRecord, reports: Path) -> None:
    allure_dir = reports / "allure-results"
    if not allure_dir.is_dir():
        print(f"where the time went: no {allure_dir}")
        return
    index = reports / "index.html"  # the last file the run writes
    written = datetime.fromtimestamp(index.stat().st_mtime, UTC) if index.is_file() else None
    started, ended = (moment.replace(tzinfo=UTC) if moment and moment.tzinfo is None
                      else moment for moment in (run.started, run.ended))
    profile = read_profile(allure_dir, run_started=started, run_ended=ended,
                           reports_written=written)
    print("\n".join(profile_table(profile)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-id", help="a finished run of the virtual lab to read "
                        "(default: run the default profile now)")
    parser.add_argument("--reports", type=Path, default=None,
                        help="the reports root holding <run-id>/ and, unless $XENHIL_DB "
                        "says otherwise, results.sqlite (default: the lab file's)")
    args = parser.parse_args()
    run_id = args.run_id
    if run_id is None:
        run_id = "bench-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "harness.cli", "run", "--run-id", run_id],
                       check=False, timeout=3 * 3600)
        print(f"\nxenhil run took {(time.monotonic() - started) / 60:.1f} min")
    lab = load_lab(DEFAULT_LAB, check_files=False)
    reports_root = args.reports or lab.reports_dir
    database = ResultsDB.open(resolve_url(None, lab.options.get("results_db"), reports_root))
    try:
        run = database.get_run(run_id)
    finally:
        database.close()
    if run is None:
        print(f"no run {run_id} in the results database")
        return 1
    per_area(run)
    migrations(run)
    identical = com1_ratio(run_id, reports_root)
    time_profile(run, reports_root / run_id)
    return 0 if run.verdict == "passed" and identical else 1


if __name__ == "__main__":
    sys.exit(main())
