"""Benchmark: `xenhil bisect` over the virtual lab's four-build series, unattended.

The series (made by `xenhil vlab build`): xen-4.17.7+xenhil.1 and .2 are good, .3 and .4
ship a vif-bridge that refuses to bring a vif online. Bisecting the bridged guest test
must name .3 as the first bad build. Prints the verdict, the runs, and the time of each
bisection step (install, boot and test of one build on vlab1). Exits non-zero if the
bisection does not find .3.

    .venv/bin/python bench/bisect_series.py [--confirm K]   (make bench: --confirm 1)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from harness.paths import PROJECT_ROOT, cache_dir

TEST = "testsuites/networking/test_bridged.py::test_bridged_guest_talks_to_dom0"
FIRST_BAD = "xen-4.17.7+xenhil.3"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--confirm", type=int, default=1,
                        help="confirmations at the start and the end (xenhil's default: 2/3)")
    args = parser.parse_args()
    series = cache_dir() / "vlab" / "builds" / "series"
    builds = sorted(path for path in series.iterdir() if path.is_dir())
    with tempfile.TemporaryDirectory(prefix="xenhil-bench-") as data:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "harness.cli", "bisect", TEST, "--host", "vlab1",
             "--good", str(builds[0]), "--bad", str(builds[-1]), "--builds", str(series),
             "--confirm", str(args.confirm)],
            cwd=PROJECT_ROOT, env={**os.environ, "XENHIL_DATA": data}, timeout=4 * 3600)
        took = time.monotonic() - started
        pages = sorted((PROJECT_ROOT / "reports").glob("bisect-*/summary.json"),
                       key=lambda path: path.stat().st_mtime)
        summary = json.loads(pages[-1].read_text())
    runs = [run for step in summary["steps"] for run in step["runs"]]
    print(f"\nbisection: {summary['verdict']} (exit {done.returncode}), first bad "
          f"{(summary['first_bad'] or {}).get('name')}, last good "
          f"{(summary['last_good'] or {}).get('name')}; page {pages[-1].parent / 'index.html'}")
    print(f"{len(runs)} runs in {took / 60:.1f} min; per run (install, boot, test):")
    for step in summary["steps"]:
        for run in step["runs"]:
            print(f"  step {step['number']:2d} {step['phase']:<8} {step['build']['name']:<22} "
                  f"{run['status']:<7} {run['duration_s']:6.1f} s")
    seconds = [run["duration_s"] for run in runs]
    if seconds:
        print(f"one bisection step: mean {sum(seconds) / len(seconds):.0f} s, "
              f"min {min(seconds):.0f} s, max {max(seconds):.0f} s")
    found = (summary["first_bad"] or {}).get("name") == FIRST_BAD
    return 0 if done.returncode == 0 and found else 1


if __name__ == "__main__":
    sys.exit(main())
