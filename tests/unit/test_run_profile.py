"""A run's time per phase (harness.run_profile) from an allure-results directory of the
shape allure-pytest 2.16 writes: results with steps, fixture containers with befores
and afters, command transcripts as attachments."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench.run_figures import profile_table
from harness import run_profile
from harness.run_profile import (
    RunProfile,
    covered,
    read_profile,
    step_phase,
    transcript_intervals,
)
from harness.verdicts import DIAGNOSIS_STEP

T0 = 1_796_149_000  # seconds since the epoch: 2026-12-01 18:16:40 UTC


def ms(offset: float) -> int:
    return int((T0 + offset) * 1000)


def step(name: str, start: float, stop: float, *steps: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "status": "passed", "start": ms(start), "stop": ms(stop),
            "steps": list(steps)}


class AllureDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    def result(self, name: str, start: float, stop: float, *steps: dict[str, Any],
               transcript: str | None = None) -> str:
        test_uuid = str(uuid.uuid4())
        attachments = []
        if transcript is not None:
            source = f"{uuid.uuid4()}-attachment.txt"
            (self.path / source).write_text(transcript)
            attachments.append({"name": "vlab1 commands", "source": source,
                                "type": "text/plain"})
        data = {"name": name, "status": "passed", "steps": list(steps),
                "attachments": attachments, "start": ms(start), "stop": ms(stop),
                "uuid": test_uuid, "fullName": f"testsuites.x.test_x#{name}"}
        (self.path / f"{test_uuid}-result.json").write_text(json.dumps(data))
        return test_uuid

    def container(self, children: list[str], befores: list[dict[str, Any]],
                  afters: list[dict[str, Any]]) -> None:
        container_uuid = str(uuid.uuid4())
        data = {"uuid": container_uuid, "children": children, "befores": befores,
                "afters": afters}
        (self.path / f"{container_uuid}-container.json").write_text(json.dumps(data))


INSTALL_TRANSCRIPT = """\
[18:23:25] vlab1# rm -rf /var/tmp/xenhil-build && mkdir -p /var/tmp/xenhil-build
  -> exit 0 in 0.16 s

[18:23:27] vlab1# DEBIAN_FRONTEND=noninteractive apt-get install -y /var/tmp/xenhil-build/x.deb
  -> exit 0 in 30.00 s
Reading package lists...

[18:24:00] vlab1# rm -rf /var/tmp/xenhil-build && sync
  -> exit 0 in 1.50 s

""" + "[18:24:10] vlab1# " + """
echo '## domains'; xl list 2>/dev/null | awk 'NR > 1 && $1 != "Domain-0" {print $1}'
echo '## files'; find /var/run/xen /tmp -xdev -mindepth 1 2>/dev/null || true

  -> exit 0 in 0.85 s
## domains
## files
/var/run/xen/domid-history
"""


@pytest.fixture
def profile(tmp_path: Path) -> RunProfile:
    """Four tests: one that boots (install steps inside), one with guests and a leak
    check in its teardown, a migration test whose pairing fixture notes the state and
    that failed and was diagnosed, and one of a run from before the install and leak
    check steps (read from its transcript)."""
    allure = AllureDir(tmp_path)
    boot = allure.result("test_boot[vlab1]", 151, 159)
    allure.container([boot], [step("xen_host", 0, 150.5, step(
        "install xen 4.17 on vlab1, vlab2 and boot", 0.5, 150,
        step("install xen 4.17 on vlab1", 10, 60), step("install xen 4.17 on vlab2", 12, 70)))],
        [step("xen_host::<lambda>", 159.2, 159.2)])
    guests = allure.result("test_guests[vlab1]", 161, 199,
                           step("create guest g-1 on vlab1", 162, 174),
                           step("create guest g-2 on vlab1", 175, 187))
    allure.container([guests], [step("guests", 160, 160)], [step(
        "guests::1", 199.5, 203, step("destroy g-1 (xl destroy)", 199.5, 201.5),
        step("leak check: the test's guests were destroyed", 202, 203))])
    migration = allure.result("test_migrate[vlab1-vlab2]", 218, 250,
                              step("create guest m-1 on vlab1", 219, 231),
                              step(DIAGNOSIS_STEP, 250, 255))
    allure.container([migration], [step("host_pair", 204, 217.5, step(
        "leak check: note vlab1's state", 204, 205))],
        [step("host_pair::1", 256, 257)])
    old = allure.result("test_old_run[vlab1]", 400, 460, transcript=INSTALL_TRANSCRIPT)
    # session fixtures: set up for the first test, torn down after the last
    allure.container([boot, guests, migration, old], [step("lab", -1, -0.9)],
                     [step("lab::<lambda>", 461, 462)])
    return read_profile(tmp_path, run_started=datetime.fromtimestamp(T0 - 1.5, UTC),
                        run_ended=datetime.fromtimestamp(T0 + 463, UTC),
                        reports_written=datetime.fromtimestamp(T0 + 467, UTC))


def test_boot_counts_its_install_apart(profile: RunProfile) -> None:
    boot = profile.tests[0]
    assert boot.name == "test_boot[vlab1]"
    assert boot.phases["install"] == pytest.approx(60)  # two hosts side by side: 10..70
    assert boot.phases["boot"] == pytest.approx(149.5 - 60)
    assert boot.phases["body"] == pytest.approx(8)
    # the lab fixture's 0.1 s, xen_host's setup around its step, its teardown
    assert boot.phases["fixtures"] == pytest.approx(0.1 + 0.5 + 0.5)
    assert boot.total == pytest.approx(159.2 + 1)


def test_guest_creates_and_the_leak_check_in_the_teardown(profile: RunProfile) -> None:
    guests = profile.tests[1]
    assert guests.phases["guest create"] == pytest.approx(24)
    assert guests.phases["leak check"] == pytest.approx(1)
    assert guests.phases["body"] == pytest.approx(38 - 24)
    assert guests.phases["fixtures"] == pytest.approx(3.5 - 1)
    assert guests.phases["boot"] == 0


def test_pairing_and_the_diagnosis_after_the_call(profile: RunProfile) -> None:
    migration = profile.tests[2]
    assert migration.phases["pairing"] == pytest.approx(13.5 - 1 + 1)
    assert migration.phases["leak check"] == pytest.approx(1)
    assert migration.phases["diagnosis"] == pytest.approx(5)
    assert migration.phases["guest create"] == pytest.approx(12)
    assert migration.phases["body"] == pytest.approx(32 - 12)
    assert (migration.start, migration.end) == (T0 + 204, T0 + 257)


def test_an_older_run_has_install_and_leak_check_from_its_transcript(
        profile: RunProfile) -> None:
    old = profile.tests[3]
    assert old.phases["install"] == pytest.approx(36.5)  # 18:23:25 to 18:24:00 + 1.5 s
    assert old.phases["leak check"] == pytest.approx(0.85)
    assert old.phases["body"] == pytest.approx(60 - old.phases["install"] - 0.85)


def test_time_outside_tests(profile: RunProfile) -> None:
    assert profile.outside == pytest.approx({
        "before the first test": 0.5,
        "between tests": (460 - -1) - ((159.2 + 1) + 43 + 53 + 60),
        "shared fixtures' teardown": 2,
        "analysis, lab down": 1,
        "report writing": 4,
    })
    assert profile.totals()["install"] == pytest.approx(60 + profile.tests[3].phases["install"])


def test_transcript_times_past_midnight_are_the_next_day() -> None:
    day = datetime(2026, 12, 1, 23, 59, 58, tzinfo=UTC)
    text = INSTALL_TRANSCRIPT.replace("18:23:25", "23:59:59").replace("18:24:00", "00:00:30")
    install = transcript_intervals(text, day)["install"]
    assert install == [(datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC).timestamp(),
                        datetime(2026, 12, 2, 0, 0, 31, 500000, tzinfo=UTC).timestamp())]


def test_covered_counts_overlaps_once() -> None:
    assert covered([(0, 10), (5, 12), (20, 21), (20.5, 20.7)]) == pytest.approx(13)


def test_the_table_fits_in_100_columns(profile: RunProfile) -> None:
    lines = profile_table(profile, top=2)
    assert all(len(line) <= 100 for line in lines)
    head = next(line for line in lines if line.lstrip().startswith("test "))
    boot_row = next(line for line in lines if line.lstrip().startswith("test_boot[vlab1]"))
    cells = dict(zip(head.split()[1:], boot_row.split()[1:], strict=True))
    assert cells == {"total": "160.2", "boot": "89.5", "inst": "60.0", "pair": "-",
                     "create": "-", "body": "8.0", "leaks": "-", "diagn": "-", "fixt": "1.1"}
    longest = lines.index("the 2 longest tests:")
    assert [line.split()[0] for line in lines[longest + 2:longest + 4]] == [
        "test_boot[vlab1]", "test_old_run[vlab1]"]


def test_tests_of_hosts_side_by_side_are_counted_apart() -> None:
    one_after_another = RunProfile([run_profile.TestProfile("a[vlab1]", "passed", 0, 100),
                                    run_profile.TestProfile("b[vlab1]", "passed", 100, 160)], {})
    assert one_after_another.summed == one_after_another.in_tests == 160
    assert not [line for line in profile_table(one_after_another) if "side by side" in line]
    # vlab2's session ran b while vlab1 ran a, then both ran c
    beside = RunProfile([run_profile.TestProfile("a[vlab1]", "passed", 0, 100),
                         run_profile.TestProfile("b[vlab2]", "passed", 10, 90),
                         run_profile.TestProfile("c[vlab1-vlab2]", "passed", 105, 125)], {})
    assert (beside.summed, beside.in_tests) == (200, 120)
    lines = profile_table(beside)
    start = next(index for index, line in enumerate(lines) if line.startswith("side by side"))
    assert lines[start:start + 2] == [
        "side by side: 200 s of tests (the phases above, added up) ran in 120 s,",
        "  1.67 times as fast as one after the other: 80 s on one host while another ran "
        "its own tests"]
    assert all(len(line) <= 100 for line in lines)


def test_the_harness_boot_steps_are_told_apart() -> None:
    # plugin.BootedHosts' step around Host.boot_build's install step, and a recovery
    assert step_phase("install xen-hypervisor-4.17-amd64 4.17.7 on vlab1, vlab2 and boot") \
        == "boot"
    assert step_phase("install xen-hypervisor-4.17-amd64 4.17.7 on vlab1") == "install"
    assert step_phase("recover vlab2: no SSH, power cycle into Xen") == "boot"
    assert step_phase("destroy xenhil-a-1 (xl destroy)") is None
