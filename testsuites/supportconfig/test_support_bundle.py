"""Support bundles: the host's own collector (supportconfig on SUSE, sos on Debian),
as the Xen maintainer asks for it after a failed run.

Procedure (once per host), on a host running the build with guests up: collect the
bundle (timed), fetch it, check it (checksum, read to its end), unpack and index it.
The guests still run afterwards, and the Xen section holds every item the maintainer
needs, each non-empty. Collection time and archive size go to the report. (A host
without Xen: tests/e2e/scenarios/plain_host_support.py.)
"""

from __future__ import annotations

import logging
from pathlib import Path

import allure
import pytest

from harness.distro import SupportCollector, distro
from harness.guests.guest import GuestFactory
from harness.host import Host
from harness.plugin import XenhilRun
from harness.support import XEN_SECTION, SupportBundle, collect

pytestmark = pytest.mark.area("supportconfig")
log = logging.getLogger(__name__)

# Where each item of the list is in a bundle, per collector: (section, file
# pattern in the bundle directory). On Debian, sos 4.0's xen plugin never
# runs (a RedHatPlugin; `xm` commands), so the Xen items, bridges and routes come from
# the harness's Xen section, and GRUB from sos's own plugin.
XEN_ITEMS: dict[SupportCollector, dict[str, tuple[str, str]]] = {
    "sos": {
        "xl info": (XEN_SECTION, "**/xl-info.txt"),
        "xl list": (XEN_SECTION, "**/xl-list.txt"),
        "xl list --long": (XEN_SECTION, "**/xl-list-long.txt"),
        "xl dmesg": (XEN_SECTION, "**/xl-dmesg.txt"),
        "xenstore contents": (XEN_SECTION, "**/xenstore-ls.txt"),
        "Xen services state": (XEN_SECTION, "**/xen-services.txt"),
        "Xen logs": (XEN_SECTION, "**/var-log-xen/**/*"),
        "guest configs": (XEN_SECTION, "**/etc-xen/xenhil/*.cfg"),
        "bridge state": (XEN_SECTION, "**/bridges.txt"),
        "route state": (XEN_SECTION, "**/routes.txt"),
        "GRUB Xen command line": ("sos/grub2", "**/boot/grub/grub.cfg"),
    },
}


def bundle_of(host: Host, run: XenhilRun) -> SupportBundle:
    bundle = collect(host.remote, host.spec.family, run.reports / "support" / host.name,
                     timeout=host.timeouts["support_collect"])
    allure.attach(bundle.render(), name=f"{host.name} support bundle",
                  attachment_type=allure.attachment_type.TEXT)
    allure.dynamic.link(bundle.directory.as_uri(), name=f"{host.name} support bundle")
    return bundle


def files_of(bundle: SupportBundle, section: str, pattern: str) -> list[Path]:
    indexed = {bundle.directory / item.path for item in bundle.index.files(section)}
    return sorted(path for path in bundle.directory.glob(pattern) if path in indexed)


def test_support_bundle_with_guests_running(xen_host: Host, guests: GuestFactory,
                                            xenhil: XenhilRun) -> None:
    running = guests.on_each(xen_host, xen_host)
    counters = {guest.name: guest.counter() for guest in running}

    bundle = bundle_of(xen_host, xenhil)
    log.info("%s: collection %.0f s, archives %d KiB", xen_host.name,
             bundle.collect_seconds, bundle.size // 1024)
    allure.dynamic.parameter("collect_seconds", f"{bundle.collect_seconds:.0f}")
    allure.dynamic.parameter("archive_kib", str(bundle.size // 1024))

    for guest in running:  # collecting must not disturb the guests
        assert guest.listed(), f"{guest.name} is gone after the support collection"
        assert guest.counter() > counters[guest.name], f"{guest.name} rebooted or stopped"

    missing = []
    items = XEN_ITEMS[distro(xen_host.spec.family).support_collector]
    for item, (section, pattern) in items.items():
        found = [path for path in files_of(bundle, section, pattern) if path.stat().st_size]
        with allure.step(f"{item}: {len(found)} non-empty file(s) in {section}"):
            if not found:
                missing.append(f"{item} ({section}: {pattern})")
    assert not missing, "support bundle lacks, or has empty: " + ", ".join(missing)

    xen = bundle.directory
    xl_list = next(xen.glob("**/xl-list.txt")).read_text()
    assert all(guest.name in xl_list for guest in running), xl_list
    configs = {path.stem for path in xen.glob("**/etc-xen/xenhil/*.cfg")}
    assert {guest.name for guest in running} <= configs, configs
    grub = next(xen.glob("**/boot/grub/grub.cfg")).read_text()
    assert "multiboot2" in grub and "dom0_mem=" in grub, "no Xen command line in grub.cfg"
