"""The pytest plugin: options, markers, fixtures and reports of the harness, in one place.

Options: --lab, --build, --hosts, --run-id (see `pytest --help`, group xen-hil); the
results database's --results-db, --record-run, --attempt (harness.results.recorder).
Hook: pytest_xenhil_host_booted(host), once a host runs the build under test.
Fixtures, each built on the one before:
  lab        the validated lab file
  xenhil     the run: its id, its reports directory, every selected host with com1
             recording from session start to end
  build      the Xen build under test (--build, else the lab's default_build)
  lab_host   one host answering SSH, whatever it runs (tests run once per host)
  xen_host   one host booted into the build (tests using it run once per host)
  host_pair  (source, destination): two hosts booted into the build, paired for migration
             during the test (then unpaired, and checked for traces like a leak)
  guest_image  the test guest (Debian kernel + initramfs), built once and cached
  xen_host_pair  two hosts booted into the build (tests using it run once)
  figures    `figures.add(name, value, unit)`: what the test measured, in its report
  guests     a factory: `guests(on=host) -> Guest`, a guest created and up; every
             guest it made is destroyed after the test, even on failure, and anything
             else the test left on a host (domain, vif, xenstore path, ...) fails it
Markers: area(name), bug(ref, ...), needs(capability); where a test runs: two_hosts,
before_build, leaves_host_off (MARKERS).
Per test, attached to the allure report: the com1 slice of every host, the transcript
of every command, the boot timeline. Product failures are `failed`, lab breakage is
`broken` (allure's rule: AssertionError fails, anything else breaks). What a failed,
broken or interrupted test reports and collects is harness/verdicts.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Collection, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import allure
import pytest
from labgrid import Environment

from . import (
    drivers,  # noqa: F401  (registers our labgrid resources and drivers)
    evidence,
)
from .boots import boot_deadline, boot_together
from .build import XenBuild, load_build
from .com1 import Com1Mark
from .errors import ConfigError
from .figures import Figures
from .guests.config import GuestAddresses
from .guests.guest import GuestFactory, GuestFailed, public_key_line
from .guests.image import GuestImage, build_guest_image
from .host import Host, InstalledDisks
from .lab import LAB_VARIABLE, Lab, default_lab, load_lab
from .leaks import Leaked
from .migration_hosts import paired
from .network import diagnosis
from .paths import cache_dir, expand
from .remote import SSHUnavailable, Transcript

log = logging.getLogger(__name__)

# Verdicts: fault-first failures, interruption, what a failure collects; the results
# database writer (--results-db).
pytest_plugins = ["harness.verdicts", "harness.results.recorder"]

MARKERS = {
    "area(name)": "scenario area: boot, guests, networking, storage, migration, supportconfig",
    "bug(ref, ...)": "bug references reproduced or guarded by the test (bsc#, boo#, ...)",
    "needs(capability)": "hardware the test needs (e.g. fc_hba); skipped where missing",
    "two_hosts": "uses a second host of the lab beside xen_host (not through xen_host_pair): "
                 "runs with the two-host scenarios when one-host ones run side by side "
                 "(harness.sessions)",
    "before_build": "looks at a host before the build under test is installed on it: "
                    "runs first in the session",
    "leaves_host_off": "powers a host off and leaves it so: runs last in the session, so "
                       "that no test waits for that host's boot (a later test that needs "
                       "it power cycles it back into the build)",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xenhil", "xen-hil: Xen hardware-in-the-loop")
    group.addoption("--lab", type=Path, default=default_lab(),
                    help=f"lab file (default: ${LAB_VARIABLE} if set, else labs/vlab.yaml)")
    group.addoption("--build", default=None,
                    help="Xen build under test: a directory of .deb or .rpm files "
                         "(default: the lab file's xenhil.default_build)")
    group.addoption("--hosts", default=None,
                    help="comma-separated hosts of the lab to use (default: all)")
    group.addoption("--run-id", default=None,
                    help="name of this run's reports directory (default: a timestamp)")
    group.addoption("--reuse-booted", action="store_true",
                    help="use a host that already runs the build as it is, without "
                         "installing or power cycling (to iterate on scenarios; a run "
                         "for the record boots every host fresh)")
    group.addoption("--guest-slot", default="0/1", metavar="K/N",
                    help="this session's share of the run's guest addresses: every Nth "
                         "from the Kth (harness.sessions gives each session its own)")
    group.addoption("--booted-earlier", default="", metavar="HOSTS",
                    help="comma-separated hosts an earlier session of this run booted "
                         "into the build (harness.sessions): reused as they run if they "
                         "still run it, else booted")


class HostHooks:
    """Hooks of the harness for other plugins."""

    @pytest.hookspec
    def pytest_xenhil_host_booted(self, host: Host) -> None:
        """`host` was booted into the build under test, or found running it
        (--reuse-booted): once per boot, before the test that asked for it."""


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(HostHooks)


def pytest_configure(config: pytest.Config) -> None:
    for marker, text in MARKERS.items():
        config.addinivalue_line("markers", f"{marker}: {text}")
    config.stash[SINK] = AllureEvidence()
    evidence.install(config.stash[SINK])


def pytest_unconfigure(config: pytest.Config) -> None:
    evidence.install(None)


class AllureEvidence:
    """harness.evidence into the running test's allure result."""

    def __init__(self) -> None:
        self.figures: Figures | None = None  # the running test's

    def step(self, title: str) -> contextlib.AbstractContextManager[None]:
        # allure files a step under the step opened last, in any thread: work side by
        # side (harness.side_by_side) would nest one host's steps in another's. Its
        # caller files one step for all of it; its threads' steps go to the log.
        if threading.current_thread() is not threading.main_thread():
            return evidence.LogSink().step(title)
        manager: contextlib.AbstractContextManager[None] = allure.step(title)
        return manager

    def attach(self, name: str, text: str, *, is_json: bool = False) -> None:
        kind = allure.attachment_type.JSON if is_json else allure.attachment_type.TEXT
        allure.attach(text, name=name, attachment_type=kind)

    def label(self, name: str, value: str) -> None:
        allure.dynamic.label(name, value)

    def link(self, url: str, name: str) -> None:
        allure.dynamic.link(url, name=name)

    def figure(self, name: str, value: float, unit: str) -> None:
        if self.figures is None:  # between tests: a session fixture's work
            log.info("figure %s: %g %s (outside a test, not recorded)", name, value, unit)
            return
        self.figures.add(name, value, unit)


@dataclass
class XenhilRun:
    """One run: its reports directory and its hosts."""

    lab: Lab
    run_id: str
    reports: Path
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def com1_dir(self) -> Path:
        return self.reports / "com1"


def default_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest) -> Lab:
    """The validated lab file given with --lab."""
    return load_lab(request.config.getoption("--lab"))


@pytest.fixture(scope="session")
def xenhil(request: pytest.FixtureRequest, lab: Lab) -> Iterator[XenhilRun]:
    """The run: every selected host, its com1 recorded from now until the session ends."""
    run_id = request.config.getoption("--run-id") or default_run_id()
    run = XenhilRun(lab, run_id, lab.reports_dir / run_id)
    run.com1_dir.mkdir(parents=True, exist_ok=True)
    selected = request.config.getoption("--hosts")
    environment = Environment(str(lab.path))
    disks = installed_disks(lab)
    try:
        for spec in lab.select(selected.split(",") if selected else None):
            target = environment.get_target(spec.name)
            if target is None:
                raise ConfigError(f"{lab.path}: no labgrid target {spec.name}")
            host = Host(lab, spec, target, run.com1_dir / f"{spec.name}.log")
            host.installed_disks = disks
            host.start()
            run.hosts[spec.name] = host
        yield run
    finally:
        for host in run.hosts.values():
            host.close()
        environment.cleanup()


def installed_disks(lab: Lab) -> InstalledDisks | None:
    """The virtual lab's disks kept with builds installed; None on a real lab."""
    if "vlab" not in lab.options:
        return None
    from .vlab.installed import KeptDisks

    return KeptDisks.for_lab(lab)


@pytest.fixture(scope="session")
def build(request: pytest.FixtureRequest, lab: Lab) -> XenBuild:
    return build_under_test(request.config, lab)


def build_under_test(config: pytest.Config, lab: Lab) -> XenBuild:
    """--build, else the lab file's xenhil.default_build."""
    source = config.getoption("--build") or lab.options.get("default_build")
    if not source:
        raise ConfigError("no build given: pass --build DIR (a directory of .deb or .rpm "
                          f"files) or set xenhil.default_build in {lab.path}")
    return load_build(expand(str(source)))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that uses `xen_host` or `lab_host` runs once for every selected host (with
    no --hosts: every host of the lab's single_host_scenarios_on, if it has one); one
    that uses `xen_host_pair` runs once, on the first two."""
    wanted = [name for name in ("xen_host", "lab_host", "xen_host_pair")
              if name in metafunc.fixturenames]
    if not wanted:
        return
    lab = load_lab(metafunc.config.getoption("--lab"), check_files=False)
    selected = metafunc.config.getoption("--hosts")
    names = [spec.name for spec in lab.select(selected.split(",") if selected else None)]
    single = names if selected else list(lab.single_host_scenarios_on) or names
    for fixture in wanted:
        # No scope= here: pytest would make the fixture session-scoped, and a test
        # after a crash would get the cached host without the recovery check.
        if fixture == "xen_host_pair":
            pairs = [(names[0], names[1])] if len(names) > 1 else [(names[0], "")]
            metafunc.parametrize(fixture, pairs, indirect=True,
                                 ids=[f"{a}-{b}" if b else a for a, b in pairs])
        else:
            metafunc.parametrize(fixture, single, indirect=True)


class BootedHosts:
    """Installs and boots the build on a host the first time a test asks for it, and
    beside it every other host the session's tests will ask for (`wanted`): side by
    side, the hosts' boots take little longer than one."""

    def __init__(self, run: XenhilRun, build: XenBuild, reuse: bool = False,
                 on_booted: Callable[[Host], object] = lambda host: None,
                 wanted: Sequence[str] = (), booted_earlier: Collection[str] = ()) -> None:
        self.run = run
        self.build = build
        self.reuse = reuse
        self.on_booted = on_booted
        self.wanted = wanted
        self.booted_earlier = booted_earlier

    def _may_reuse(self, name: str) -> bool:
        return self.reuse or name in self.booted_earlier

    def _reuse_reason(self, name: str) -> str | None:
        if name in self.booted_earlier:
            return ("booted into the build earlier in this run, by the session of its "
                    "one-host scenarios; not power cycled again")
        return None

    def get(self, name: str) -> Host:
        host = self.run.hosts[name]
        host.check_not_broken()  # its remaining tests end at once, BROKEN
        if host.booted is None and self._may_reuse(name) \
                and host.adopt_running_build(self.build, self._reuse_reason(name)):
            self.on_booted(host)
            return host
        if self._needs_boot(host):
            self._boot(host)
        elif host.needs_recovery:
            with allure.step(f"recover {name}: power cycle into Xen"):
                host.power_cycle_to_shell(expect_xen=True)
        return host

    def _needs_boot(self, host: Host) -> bool:
        return host.booted is None or host.booted.build != self.build

    def _boot(self, host: Host) -> None:
        """Boot `host` and the wanted hosts not booted yet. A host reused as it runs
        (--reuse-booted, --booted-earlier) is adopted by its own first test instead."""
        others = [] if self.reuse else [
            other for other in (self.run.hosts[name] for name in self.wanted
                                if name != host.name and name in self.run.hosts
                                and name not in self.booted_earlier)
            if self._needs_boot(other) and other.health.broken is None]
        hosts = [host, *others]
        with allure.step(f"install {self.build.label} on {', '.join(h.name for h in hosts)} "
                         "and boot"):
            errors = boot_together(hosts, self.build,
                                   max(boot_deadline(h.timeouts) for h in hosts))
        for booted in hosts:
            if booted.name in errors:
                continue
            timeline = booted.strategy.timeline
            for stage, seconds in timeline.stages if timeline is not None else ():
                evidence.figure(f"{booted.name} boot: {stage}", seconds, "s")
            self.on_booted(booted)
        for other in others:
            if other.name in errors:  # its own first test tries again, with its evidence
                log.warning("%s: booting it beside %s failed: %s", other.name, host.name,
                            str(errors[other.name]).splitlines()[0])
        if host.name in errors:
            raise errors[host.name]


WANTED_HOSTS = pytest.StashKey[tuple[str, ...]]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`before_build` tests first, `leaves_host_off` tests last (the sort keeps the
    order otherwise): on a fresh lab the first find their host still as it came, and the
    boot of the build then starts from the host they left running; the last leave a
    host powered off that no test after them has to wait for."""
    def place(item: pytest.Item) -> int:
        if item.get_closest_marker("before_build") is not None:
            return 0
        return 2 if item.get_closest_marker("leaves_host_off") is not None else 1

    items.sort(key=place)


def pytest_collection_finish(session: pytest.Session) -> None:
    """The hosts the selected tests will run on (through xen_host, xen_host_pair), in
    the order they come: BootedHosts boots them together."""
    wanted: list[str] = []
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is None:
            continue
        for fixture in ("xen_host", "xen_host_pair"):
            value = callspec.params.get(fixture)
            names = value if isinstance(value, tuple) else (value,)
            wanted += [name for name in names if name and name not in wanted]
    session.config.stash[WANTED_HOSTS] = tuple(wanted)


@pytest.fixture(scope="session")
def booted_hosts(request: pytest.FixtureRequest, xenhil: XenhilRun,
                 build: XenBuild) -> BootedHosts:
    wanted: tuple[str, ...] = request.config.stash.get(WANTED_HOSTS, ())
    earlier = request.config.getoption("--booted-earlier")
    return BootedHosts(xenhil, build, reuse=request.config.getoption("--reuse-booted"),
                       on_booted=lambda host: request.config.hook.pytest_xenhil_host_booted(
                           host=host),
                       wanted=wanted, booted_earlier=frozenset(filter(None, earlier.split(","))))


@pytest.fixture
def lab_host(request: pytest.FixtureRequest, xenhil: XenhilRun) -> Host:
    """A host that answers SSH, booted into whatever it has (power cycled if it does
    not answer): for scenarios that install builds themselves."""
    host = xenhil.hosts[request.param]
    host.ensure_shell()
    return host


@pytest.fixture
def xen_host(request: pytest.FixtureRequest, booted_hosts: BootedHosts) -> Host:
    """A host running the build under test: installed and booted once a session,
    power cycled back into it when an earlier test left it crashed or broken."""
    return booted_hosts.get(request.param)


@pytest.fixture
def xen_host_pair(request: pytest.FixtureRequest,
                  booted_hosts: BootedHosts) -> tuple[Host, Host]:
    """Two hosts booted into the build, for scenarios between hosts."""
    first, second = request.param
    if not second:
        pytest.skip(f"needs two hosts; only {first} is selected")
    return booted_hosts.get(first), booted_hosts.get(second)


@pytest.fixture
def host_pair(xen_host_pair: tuple[Host, Host]) -> Iterator[tuple[Host, Host]]:
    """(source, destination): the pair, both running the build (one that does not
    answer SSH, e.g. powered off by an earlier test, is power cycled back into it),
    paired for `xl migrate` for this test only (harness.migration_hosts.paired):
    afterwards no key, authorized_keys, known_hosts or /etc/hosts line of the pairing
    is left, or the test fails as a leak."""
    for host in xen_host_pair:
        try:
            host.remote.wait_ready(timeout=5, interval=1)
        except SSHUnavailable:
            with allure.step(f"recover {host.name}: no SSH, power cycle into Xen"):
                host.power_cycle_to_shell(expect_xen=True)
    with paired(xen_host_pair):
        yield xen_host_pair


@pytest.fixture(scope="session")
def guest_image(xenhil: XenhilRun) -> GuestImage:
    """The test guest, built from Debian packages once and cached; root logs in over
    SSH with the keys the harness uses for the run's hosts."""
    keys = {public_key_line(host.spec.ssh.key_file) for host in xenhil.hosts.values()
            if host.spec.ssh.key_file is not None}
    if not keys:
        raise ConfigError(f"{xenhil.lab.path}: guests need ssh_key_file (the key the "
                          "harness logs in to hosts and guests with)")
    return build_guest_image(cache_dir(), sorted(keys))


@pytest.fixture(scope="session")
def guest_addresses(request: pytest.FixtureRequest) -> GuestAddresses:
    """MACs and addresses for the run's guests: unique within the run, also across the
    run's sessions (--guest-slot)."""
    slot, _, slots = request.config.getoption("--guest-slot").partition("/")
    try:
        return GuestAddresses(slot=int(slot), slots=int(slots))
    except ValueError as error:
        raise pytest.UsageError(f"--guest-slot K/N with 0 <= K < N: {error}") from None


@pytest.fixture
def guests(request: pytest.FixtureRequest, guest_image: GuestImage,
           guest_addresses: GuestAddresses) -> Iterator[GuestFactory]:
    """`guests(on=host, name=None, type="pv", network="bridge", ...) -> Guest`: a guest,
    created and up (ready on its console, answering SSH); `guests.on_each(here, there)`:
    a guest on each host, created side by side. After the test every guest
    it made is destroyed, even on failure, each one's console log is attached, and the
    leak check runs on every host it used: anything new there fails the test."""
    test = request.node.originalname.removeprefix("test_").replace("_", "-")[:40]
    factory = GuestFactory(guest_image, guest_addresses, prefix=test)
    try:
        yield factory
    finally:
        # The test's evidence is attached already: the cleanup keeps a transcript of its own.
        cleanup, hosts = Transcript(), {guest.host for guest in factory} | factory.hosts
        for host in hosts:
            host.transcripts.append(cleanup)
        leaks = ""
        try:
            problems = factory.destroy_all()
            if not problems:  # with guests left, what else is left says little
                try:
                    factory.leak_check.verify()
                except Leaked as leaked:
                    leaks = str(leaked)
        finally:
            for host in hosts:
                host.transcripts.remove(cleanup)
        if cleanup.entries:
            allure.attach(cleanup.render(), name="guest cleanup commands",
                          attachment_type=allure.attachment_type.TEXT)
        for guest in factory:
            try:
                console = guest.console_log()
            except Exception as error:  # the evidence of the other guests still counts
                console = f"(console log not readable: {error})"
            allure.attach(f"{guest.config.render()}\n{console}",
                          name=f"{guest.name} console ({guest.host.name})",
                          attachment_type=allure.attachment_type.TEXT)
        factory.close()
        if problems or leaks:
            for host in sorted(hosts, key=lambda host: host.name):
                allure.attach(diagnosis(host), name=f"{host.name} guests and network",
                              attachment_type=allure.attachment_type.TEXT)
        if problems:
            raise GuestFailed("guests left behind: " + "; ".join(problems))
        if leaks:
            raise Leaked(leaks)


FIGURES = pytest.StashKey[Figures]()
SINK = pytest.StashKey[AllureEvidence]()


@pytest.fixture(autouse=True)
def _figures_of_the_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test's figures, from the `figures` fixture and harness.evidence.figure
    (boot stages, migrations) alike."""
    sink = request.config.stash[SINK]
    sink.figures = request.node.stash[FIGURES] = Figures(request.node)
    try:
        yield
    finally:
        sink.figures = None


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    """`figures.add(name, value, unit)`: a figure the test measured, for its report."""
    return request.node.stash[FIGURES]


# A test's com1 slice in its report holds at most this much (the end); the whole log
# is in reports/<run-id>/com1/.
COM1_SLICE_LIMIT = 8 * 1024 * 1024


@dataclass
class Evidence:
    """Where each host's com1 and transcript stood when a test began."""

    run: XenhilRun
    marks: dict[str, Com1Mark]
    transcripts: dict[str, Transcript]

    def attach(self) -> None:
        """com1 first: where a host crashed or hung, it is the evidence."""
        for name, host in self.run.hosts.items():
            start, end = self.marks[name], host.com1.mark()
            cut = end.offset - start.offset - COM1_SLICE_LIMIT
            if cut > 0:  # a console that printed for hours: its end, the rest is in the log
                start = dataclasses.replace(start, offset=start.offset + cut)
            text = host.com1.text_since(start, end)
            if text:
                if cut > 0:
                    text = (f"[... {cut} bytes before this are in "
                            f"{host.com1.log_path} ...]\n{text}")
                allure.attach(text, name=f"{name} com1",
                              attachment_type=allure.attachment_type.TEXT)
            if self.transcripts[name].entries:
                allure.attach(self.transcripts[name].render(), name=f"{name} commands",
                              attachment_type=allure.attachment_type.TEXT)
            # The last boot; a host reused as it ran was not booted by this session.
            timeline = host.booted and (host.strategy.timeline or host.booted.timeline)
            if timeline:
                allure.attach(timeline.render(), name=f"{name} boot timeline",
                              attachment_type=allure.attachment_type.TEXT)


EVIDENCE = pytest.StashKey[Evidence]()


@pytest.fixture(autouse=True)
def _attempt_label(request: pytest.FixtureRequest) -> None:
    """A retest at the end of the run (--retest-regressions) is labelled as such."""
    attempt = request.config.getoption("--attempt", default=1)
    if attempt > 1:
        allure.dynamic.label("attempt", str(attempt))


@pytest.fixture(autouse=True)
def _evidence(request: pytest.FixtureRequest) -> Generator[None, None, None]:
    """Note where every host's com1 and transcript stand as the test begins (the
    report hook below attaches what came since to the test's own result)."""
    if "xenhil" not in request.fixturenames:
        yield
        return
    run: XenhilRun = request.getfixturevalue("xenhil")
    evidence = Evidence(run, {name: host.com1.mark() for name, host in run.hosts.items()},
                        {name: Transcript() for name in run.hosts})
    request.node.stash[EVIDENCE] = evidence
    for name, host in run.hosts.items():
        host.transcripts.append(evidence.transcripts[name])
    _label(request, run)
    try:
        yield
    finally:
        for name, host in run.hosts.items():
            host.transcripts.remove(evidence.transcripts[name])


def _label(request: pytest.FixtureRequest, run: XenhilRun) -> None:
    allure.dynamic.label("lab", run.lab.name)
    for marker in request.node.iter_markers("area"):
        allure.dynamic.label("area", marker.args[0])
        allure.dynamic.feature(marker.args[0])
    for marker in request.node.iter_markers("bug"):
        for ref in marker.args:
            allure.dynamic.issue(ref, name=ref)
    # allure's own "host" label names the machine pytest runs on; ours is the lab host.
    callspec = getattr(request.node, "callspec", None)
    for fixture in ("xen_host", "lab_host"):
        if callspec is not None and fixture in callspec.params:
            allure.dynamic.label("lab_host", callspec.params[fixture])
