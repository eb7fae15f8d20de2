"""End-to-end tests against the real virtual lab: QEMU, ipmi_sim, ipmitool, sshd, Xen.

They need root and the lab's images (`make test` builds them first). The lab's ports
are fixed, so a virtual lab that is already running would be disturbed: the tests
refuse to start then, saying how to stop it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.lab import Lab, default_lab, load_lab
from harness.paths import cache_dir
from harness.vlab import control
from harness.vlab.builds import fetch_builds
from harness.vlab.derived_builds import make_derived_builds
from harness.vlab.image import Image, build_image
from harness.vlab.installed import forget_kept_disks


@pytest.fixture(scope="session")
def vlab_image() -> Image:
    if os.geteuid() != 0:
        pytest.fail("the end-to-end tests need root (QEMU images, loop-free disk build)")
    image = build_image(cache_dir())
    fetch_builds(cache_dir(), image)
    make_derived_builds(cache_dir())  # the builds with a known defect (test_results.py)
    # Every machine starts without kept disks: each run then takes the same boot path
    # (test_results.py installs and keeps 4.17.7; later runs boot from that disk).
    forget_kept_disks()
    return image


def assert_vlab_down(lab: Lab) -> None:
    running = [h.name for h in control.virtual_hosts(lab) if control.host_status(h).bmc_running]
    if running:
        pytest.fail(f"the virtual lab is already up ({', '.join(running)}); the tests need "
                    "its ports: run `.venv/bin/xenhil vlab down` first")


@pytest.fixture
def vlab(vlab_image: Image) -> Iterator[Lab]:
    """The virtual lab, up (hosts off) for one test, and down afterwards whatever happens."""
    lab = load_lab(default_lab(), check_files=False)
    assert_vlab_down(lab)
    try:
        control.up(lab, vlab_image.disk)
        yield load_lab(default_lab())
    finally:
        control.down(lab)


@pytest.fixture
def vlab_stopped(vlab_image: Image) -> Lab:
    """The virtual lab's lab file, with nothing of the lab running (for `xenhil run`,
    which starts and stops the lab itself)."""
    lab = load_lab(default_lab(), check_files=False)
    assert_vlab_down(lab)
    return lab


def qemu_com1_log(lab: Lab, host: str) -> Path:
    run_dir = next(h.run_dir for h in control.virtual_hosts(lab) if h.name == host)
    return run_dir / "com1-qemu.log"


def lab_processes(lab: Lab) -> list[str]:
    """The virtual lab's BMCs and machines that run, by host and PID."""
    left = []
    for host in control.virtual_hosts(lab):
        status = control.host_status(host)
        if status.bmc_pid:
            left.append(f"{host.name} BMC {status.bmc_pid}")
        if status.qemu_pid:
            left.append(f"{host.name} QEMU {status.qemu_pid}")
    return left


@pytest.fixture
def vlab_cleaned(vlab_stopped: Lab) -> Iterator[Lab]:
    """The stopped virtual lab, stopped again after the test whatever it left (a killed
    run's BMCs and machines, its owner file)."""
    try:
        yield vlab_stopped
    finally:
        if lab_processes(vlab_stopped):
            control.down(vlab_stopped)
        control.clear_owner(vlab_stopped)
