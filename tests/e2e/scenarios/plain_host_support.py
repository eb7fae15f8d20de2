"""Harness self-test scenario: a support bundle of a host that runs no Xen, run by
tests/e2e/test_interrupts.py and tests/e2e/test_lab_sharing.py as their one-host run on
a fresh virtual lab (`xenhil run --test`; the file name does not start with test_, so
only an explicit path collects it).

It is not a scenario of the build: on a real lab every host runs Xen once the first
build is installed, and in `make run` it would hold up the install by a plain boot and
a bundle. The Xen section reports itself skipped, not failed, and the distro's
collector still runs.
"""

from __future__ import annotations

import pytest

from harness.host import Host
from harness.plugin import XenhilRun
from harness.support import XEN_SECTION, collect


@pytest.mark.before_build
def test_xen_section_skipped_on_a_host_without_xen(lab_host: Host, xenhil: XenhilRun) -> None:
    capabilities = lab_host.run("cat /proc/xen/capabilities", check=False).stdout.strip()
    assert capabilities != "control_d", (
        f"{lab_host.name} runs Xen already: this scenario needs a host the build was "
        "never installed on, as a fresh virtual lab has")
    bundle = collect(lab_host.remote, lab_host.spec.family,
                     xenhil.reports / "support" / lab_host.name,
                     timeout=lab_host.timeouts["support_collect"])
    assert XEN_SECTION in bundle.index.not_run, bundle.index.render()
    assert "not a Xen dom0" in bundle.index.not_run[XEN_SECTION]
    assert not bundle.index.files(XEN_SECTION)
    assert bundle.index.files("sos/grub2"), "sos collected nothing of GRUB"
