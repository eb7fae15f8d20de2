"""Migration scenarios: the guest types to migrate, the shared disk fixture, and the Xen
logs of the test's hosts on failure. Save/restore and local migration need one host;
the rest migrate between two."""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from typing import Any

import allure
import pytest

from harness.host import Host
from harness.lab import load_lab
from harness.migration_hosts import (
    MIGRATION_GUEST_TYPES,
    live_migration_unsupported,
    unmigratable_guest_types,
)
from harness.nbd import SharedDisk
from harness.plugin import build_under_test
from harness.xenlogs import xen_logs

SHARED_DISK_MB = 64
UNMIGRATABLE = pytest.StashKey[dict[str, str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "guest_types(type, ...): the guest types a test "
                            f"migrates (default: {', '.join(MIGRATION_GUEST_TYPES)})")


@pytest.hookimpl(trylast=True)  # after the plugin's hosts: ids read [vlab1-vlab2-pvh]
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that live-migrates (`guest_type`) runs once per guest type of its
    `guest_types` mark that the build can live-migrate, as its hypervisor's Kconfig
    says: a build without shadow paging gets no PV variants, and the run's header says
    why."""
    if "guest_type" not in metafunc.fixturenames:
        return
    config = metafunc.config
    if UNMIGRATABLE not in config.stash:
        lab = load_lab(config.getoption("--lab"), check_files=False)
        config.stash[UNMIGRATABLE] = unmigratable_guest_types(build_under_test(config, lab))
    unmigratable = config.stash[UNMIGRATABLE]
    mark = metafunc.definition.get_closest_marker("guest_types")
    kinds = mark.args if mark else MIGRATION_GUEST_TYPES
    metafunc.parametrize("guest_type", [kind for kind in kinds if kind not in unmigratable])


def pytest_report_collectionfinish(config: pytest.Config) -> list[str]:
    return [f"live migration of {kind.upper()} guests not run: {why}"
            for kind, why in config.stash.get(UNMIGRATABLE, {}).items()]


def skip_unless_live_migratable(hosts: Iterable[Host], guest_type: str) -> None:
    """Skip the test where the Xen booted on one of `hosts` cannot live-migrate a
    `guest_type` guest."""
    for host in hosts:
        reason = live_migration_unsupported(host, guest_type)
        if reason is not None:
            pytest.skip(reason)


@pytest.fixture
def live_pair(request: pytest.FixtureRequest, xen_host_pair: tuple[Host, Host],
              guest_type: str) -> tuple[Host, Host]:
    """host_pair, for tests that live-migrate a `guest_type` guest: skipped where the
    booted Xen cannot, before the hosts are paired (pairing costs half a minute under
    TCG)."""
    skip_unless_live_migratable(xen_host_pair, guest_type)
    pair: tuple[Host, Host] = request.getfixturevalue("host_pair")
    return pair


@pytest.fixture
def live_host(xen_host: Host, guest_type: str) -> Host:
    """xen_host, for tests that live-migrate a `guest_type` guest to its own host:
    skipped where the booted Xen cannot."""
    skip_unless_live_migratable((xen_host, ), guest_type)
    return xen_host


@pytest.fixture
def shared_disk(live_pair: tuple[Host, Host]) -> Iterator[SharedDisk]:
    """A disk both hosts see as the same /dev/nbdN, exported by the source. Asked for
    before guests, it is removed after the test's guests are destroyed."""
    source, destination = live_pair
    with SharedDisk("xenhil-shared", source, [source, destination], SHARED_DISK_MB) as disk:
        yield disk


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[
        None, Any, None]:
    """A failed migration test gets `xl dmesg` and /var/log/xen of its hosts (its com1
    slices and transcripts are attached by the plugin)."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    funcargs = getattr(item, "funcargs", {})
    hosts = funcargs.get("xen_host_pair")  # under host_pair and live_pair
    if hosts is None and "xen_host" in funcargs:  # a one-host test
        hosts = (funcargs["xen_host"],)
    if report.when != "call" or not report.failed or hosts is None:
        return
    for host in hosts:
        try:
            logs = xen_logs(host)
        except Exception as error:  # a host that is down still leaves the other's logs
            logs = f"(not readable: {error})"
        allure.attach(logs, name=f"{host.name} xl dmesg and /var/log/xen",
                      attachment_type=allure.attachment_type.TEXT)
