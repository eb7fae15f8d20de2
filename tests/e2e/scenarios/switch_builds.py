"""Harness self-test: one host, one session, two builds: 4.17.5 then 4.17.7; each must
be the Xen that booted (com1 banner and xl info). Run by tests/e2e/test_run.py."""

from __future__ import annotations

import pytest

from harness.build import load_build
from harness.host import Host
from harness.paths import cache_dir


@pytest.mark.parametrize("version", ["4.17.5", "4.17.7"])
def test_install_and_boot(lab_host: Host, version: str) -> None:
    build = load_build(cache_dir() / "vlab" / "builds" / f"xen-{version}")
    booted = lab_host.boot_build(build)
    assert booted.console_version == version
    assert booted.xen_version == version
    installed = lab_host.run("dpkg-query -W -f '${Version}' xen-hypervisor-4.17-amd64").stdout
    assert installed == build.hypervisor.version
