"""Kept disks of the virtual lab (harness.vlab.installed), on real qcow2 files: a small
base image, host overlays on it written with qemu-io, no QEMU machine."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.build import Package, XenBuild
from harness.cli import main
from harness.errors import InfrastructureError
from harness.lab import DEFAULT_LAB, Lab, load_lab
from harness.paths import labs_dir
from harness.vlab import control, installed
from harness.vlab.installed import KeptDisks, forget_kept_disks, installed_dir

from .locks import held_flock


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lab:
    monkeypatch.setenv("XENHIL_CACHE", str(tmp_path / "cache"))
    return load_lab(DEFAULT_LAB, check_files=False)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    image = tmp_path / "base.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(image), "16M")
    qemu_io(image, "write -P 0x11 0 1M")
    return image


@pytest.fixture
def hosts(lab: Lab, base: Path) -> Iterator[dict[str, control.VirtualHost]]:
    """Both hosts' run directories as `vlab up` leaves them: a fresh overlay on the base
    image; no machine runs."""
    machines = {machine.name: machine for machine in control.virtual_hosts(lab)}
    for machine in machines.values():
        fresh_overlay(machine, base)
    yield machines


def fresh_overlay(machine: control.VirtualHost, base: Path) -> None:
    for leftover in ("kept-disk", "installed.qcow2"):
        (machine.run_dir / leftover).unlink(missing_ok=True)
    machine.run_dir.mkdir(parents=True, exist_ok=True)
    qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
             str(machine.overlay))
    (machine.run_dir / "base-image").write_text(control._identity(base))


def qemu_img(*args: str) -> str:
    return subprocess.run(["qemu-img", *args], check=True, capture_output=True,
                          text=True).stdout


def qemu_io(image: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(image)],
                          capture_output=True, text=True)


def backing(image: Path) -> str:
    return json.loads(qemu_img("info", "--output=json", str(image)))["full-backing-filename"]


def make_build(tmp_path: Path, name: str, content: bytes) -> XenBuild:
    directory = tmp_path / name
    directory.mkdir()
    deb = directory / "xen-hypervisor-4.17-amd64_4.17.7_amd64.deb"
    deb.write_bytes(content)
    return XenBuild(str(directory), (Package(deb, "xen-hypervisor-4.17-amd64", "4.17.7",
                                             "amd64", "deb"),))


def install(disks: KeptDisks, host: str, build: XenBuild,
            machines: dict[str, control.VirtualHost], pattern: int) -> Path | None:
    """What the harness does on a host: install (here: write), power off, stage, boot
    and verify, keep."""
    assert qemu_io(machines[host].overlay, f"write -P {pattern:#x} 1M 1M").returncode == 0
    assert disks.stage(host)
    return disks.keep_staged(host, build)


def test_an_installed_disk_is_kept_and_another_host_boots_from_it(
        lab: Lab, hosts: dict[str, control.VirtualHost], tmp_path: Path) -> None:
    disks = KeptDisks(lab, keep=3)
    build = make_build(tmp_path, "build", b"hypervisor")
    assert disks.kept("vlab1", build) is None
    kept = install(disks, "vlab1", build, hosts, 0xab)
    assert kept is not None and disks.kept("vlab2", build) == kept
    assert not (hosts["vlab1"].run_dir / "installed.qcow2").exists()  # moved, not copied
    assert json.loads(kept.with_suffix(".json").read_text())["installed_on"] == "vlab1"

    assert disks.restore("vlab2", build) == kept
    overlay = hosts["vlab2"].overlay
    assert backing(overlay) == str(kept)
    # What the install wrote and what the base image holds, both through the new overlay.
    assert qemu_io(overlay, "read -P 0xab 1M 1M").returncode == 0
    assert qemu_io(overlay, "read -P 0x11 0 1M").returncode == 0
    assert installed.in_use_disks() == {kept: ["vlab2"]}


def test_the_key_is_the_package_files_and_the_base_image(
        lab: Lab, hosts: dict[str, control.VirtualHost], base: Path, tmp_path: Path) -> None:
    disks = KeptDisks(lab, keep=3)
    build = make_build(tmp_path, "build", b"hypervisor")
    install(disks, "vlab1", build, hosts, 0xab)
    # Same names and versions, other bytes: another build.
    assert disks.kept("vlab1", make_build(tmp_path, "rebuilt", b"hypervisor, rebuilt")) is None
    assert disks.kept("vlab1", make_build(tmp_path, "copy", b"hypervisor")) is not None
    # A rebuilt base image (new file): nothing kept applies to it.
    base.unlink()
    qemu_img("create", "-q", "-f", "qcow2", str(base), "16M")
    fresh_overlay(hosts["vlab1"], base)
    assert disks.kept("vlab1", build) is None


def test_an_overlay_on_a_kept_disk_is_not_kept_again(
        lab: Lab, hosts: dict[str, control.VirtualHost], tmp_path: Path) -> None:
    disks = KeptDisks(lab, keep=3)
    first = make_build(tmp_path, "first", b"one")
    install(disks, "vlab1", first, hosts, 0xab)
    disks.restore("vlab1", first)
    assert not disks.stage("vlab1")  # it would depend on the kept disk of `first`
    assert disks.keep_staged("vlab1", make_build(tmp_path, "second", b"two")) is None


def test_two_hosts_keeping_the_same_build_keep_one_disk(
        lab: Lab, hosts: dict[str, control.VirtualHost], tmp_path: Path) -> None:
    disks = KeptDisks(lab, keep=3)
    build = make_build(tmp_path, "build", b"hypervisor")
    assert disks.stage("vlab1") and disks.stage("vlab2")
    first = disks.keep_staged("vlab1", build)
    assert disks.keep_staged("vlab2", build) == first
    assert first is not None
    assert sorted(path.name for path in installed_dir().iterdir()) == [
        first.with_suffix(".json").name, first.name]
    assert not list(Path(hosts["vlab2"].run_dir).glob("installed.qcow2"))


def test_the_least_recently_used_go_but_never_one_in_use(
        lab: Lab, hosts: dict[str, control.VirtualHost], base: Path, tmp_path: Path) -> None:
    disks = KeptDisks(lab, keep=1)
    builds = [make_build(tmp_path, f"build{n}", f"hypervisor {n}".encode()) for n in range(3)]
    first = install(disks, "vlab1", builds[0], hosts, 0xa0)
    disks.restore("vlab2", builds[0])  # vlab2 runs on it from now on
    fresh_overlay(hosts["vlab1"], base)
    second = install(disks, "vlab1", builds[1], hosts, 0xa1)
    fresh_overlay(hosts["vlab1"], base)
    third = install(disks, "vlab1", builds[2], hosts, 0xa2)
    assert first is not None and second is not None and third is not None
    # keep=1: the newest stays, the one vlab2 is on stays, the other goes.
    assert (first.exists(), second.exists(), third.exists()) == (True, False, True)
    forget_kept_disks()
    assert (first.exists(), third.exists()) == (True, False)


def test_a_machine_that_still_runs_is_not_touched(
        lab: Lab, hosts: dict[str, control.VirtualHost], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    disks = KeptDisks(lab, keep=3)
    build = make_build(tmp_path, "build", b"hypervisor")
    install(disks, "vlab1", build, hosts, 0xab)
    monkeypatch.setattr(installed, "POWER_OFF_TIMEOUT", 0.5)
    machine = hosts["vlab2"]
    before = machine.overlay.read_bytes()
    qemu = subprocess.Popen(["bash", "-c", "exec -a qemu-system-x86_64 sleep 30"])
    try:
        machine.qemu_pid_file.write_text(f"{qemu.pid}\n")
        deadline = time.monotonic() + 5  # until bash has exec'd it under QEMU's name
        while control.machine_pid(machine) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(InfrastructureError, match="vlab2: QEMU still runs"):
            disks.restore("vlab2", build)
        with pytest.raises(InfrastructureError, match="vlab2: QEMU still runs"):
            disks.stage("vlab2")
    finally:
        qemu.kill()
        qemu.wait(timeout=10)
    assert machine.overlay.read_bytes() == before


def test_a_lab_keeps_three_builds_unless_it_says_otherwise(lab: Lab) -> None:
    disks = KeptDisks.for_lab(lab)
    assert disks is not None and disks.keep == installed.DEFAULT_KEEP == 3
    lab.options["vlab"]["keep_installed"] = 0
    assert KeptDisks.for_lab(lab) is None


def test_status_lists_the_kept_disks_and_forget_keeps_those_in_use(
        lab: Lab, hosts: dict[str, control.VirtualHost], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    disks = KeptDisks(lab, keep=3)
    running = make_build(tmp_path, "running", b"the one vlab2 runs")
    idle = make_build(tmp_path, "idle", b"nobody runs this one")
    in_use = install(disks, "vlab1", running, hosts, 0xab)
    disks.restore("vlab2", running)
    fresh_overlay(hosts["vlab1"], Path(backing(hosts["vlab1"].overlay)))
    unused = install(disks, "vlab1", idle, hosts, 0xcd)
    assert in_use is not None and unused is not None

    assert main(["vlab", "status"]) == 0
    rows = [[cell.strip() for cell in line.split("│")[1:-1]]
            for line in capsys.readouterr().out.splitlines() if ".qcow2" in line]
    # disk, build, from, kept, size, in use by; the most recently used first
    assert [(row[0], row[2], row[5]) for row in rows] == [
        (unused.name, str(tmp_path / "idle"), "-"),
        (in_use.name, str(tmp_path / "running"), "vlab2")]

    assert main(["vlab", "forget"]) == 0
    said = capsys.readouterr()
    assert "forgot 1 kept disk(s)" in said.out + said.err
    assert (in_use.exists(), unused.exists()) == (True, False)


def test_a_second_lab_keeps_its_own_hosts_and_owner_and_shares_the_kept_disks(
        lab: Lab, hosts: dict[str, control.VirtualHost], base: Path, tmp_path: Path) -> None:
    other = load_lab(labs_dir() / "vlab-b.yaml", check_files=False)
    other_hosts = {machine.name: machine for machine in control.virtual_hosts(other)}
    assert {h.run_dir for h in hosts.values()}.isdisjoint(
        h.run_dir for h in other_hosts.values())

    control.write_owner(lab, "run-a", keep_up=False)
    control.write_owner(other, "run-b", keep_up=True)
    assert (control.read_owner(lab) or {})["run_id"] == "run-a"
    assert (control.read_owner(other) or {})["run_id"] == "run-b"
    control.clear_owner(lab)
    assert control.read_owner(lab) is None and control.read_owner(other) is not None

    # A build kept from lab A's vlab1 boots lab B's vlab2, and is then in use there.
    build = make_build(tmp_path, "build", b"hypervisor")
    kept = install(KeptDisks(lab, keep=3), "vlab1", build, hosts, 0x22)
    fresh_overlay(other_hosts["vlab2"], base)
    other_disks = KeptDisks(other, keep=3)
    assert kept is not None and other_disks.kept("vlab2", build) == kept
    assert other_disks.restore("vlab2", build) == kept
    assert installed.in_use_disks() == {kept: ["vlab2"]}


def test_kept_disks_wait_for_another_labs_process_but_not_forever(
        lab: Lab, hosts: dict[str, control.VirtualHost], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    build = make_build(tmp_path, "build", b"hypervisor")
    kept = install(KeptDisks(lab, keep=3), "vlab1", build, hosts, 0x33)
    assert kept is not None
    with held_flock(control.vlab_dir() / "installed.lock"):
        monkeypatch.setattr(installed, "LOCK_TIMEOUT", 0.5)
        with pytest.raises(InfrastructureError, match=r"installed\.lock: still locked after 0 s"):
            forget_kept_disks()
        assert kept.exists()
    assert forget_kept_disks() == 1 and not kept.exists()


def test_a_lab_stopped_is_on_no_kept_disk(
        base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XENHIL_CACHE", str(tmp_path / "cache"))
    # Addresses no other test's lab listens on: down checks that nothing does.
    text = re.sub(r"127\.0\.1\.([12])\b", r"127.0.1.20\1", DEFAULT_LAB.read_text())
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    lab = load_lab(path, check_files=False)
    machines = {machine.name: machine for machine in control.virtual_hosts(lab)}
    for machine in machines.values():
        fresh_overlay(machine, base)
    disks = KeptDisks(lab, keep=3)
    build = make_build(tmp_path, "build", b"hypervisor")
    kept = install(disks, "vlab1", build, machines, 0x44)
    assert kept is not None and disks.restore("vlab2", build) == kept
    assert installed.in_use_disks() == {kept: ["vlab2"]}
    control.down(lab)
    assert installed.in_use_disks() == {}
    assert forget_kept_disks() == 1 and not kept.exists()
