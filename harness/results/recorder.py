"""The pytest plugin that writes a run into the results database as it goes.

Options (group xen-hil): --results-db URL, --record-run, --attempt N. Without
--results-db it does nothing. With it (and --alluredir, whose results it reads):
- unless --record-run says the caller (xenhil run) made the run's row, the run is
  recorded at session start (kind adhoc) and ended at session end with a verdict
  from its results (`plain_verdict`);
- every host booted into the build gets its facts recorded (host_facts.gather);
- every test, once it has finished and allure-pytest has written its result, is
  recorded from that allure result, with the figures it measured, and committed at
  once: a run that is killed keeps every test that finished.

allure-pytest closes a test's result (and its file logger writes it) after the
`pytest_runtest_logfinish` hooks of the test, in the wrapper of its listener. Our
wrapper of that hook is `tryfirst`, so it is outside allure's and records after it.
The result comes through allure-commons' `report_result` hook, the one its file
logger writes the result file from: the same data as the file, no file to search for.
"""

from __future__ import annotations

import getpass
import logging
import socket
import subprocess
from collections.abc import Generator, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import allure_commons
import attr
import pytest
from sqlalchemy.exc import SQLAlchemyError

from ..errors import ConfigError
from ..lab import load_lab
from ..paths import PROJECT_ROOT
from ..plugin import FIGURES, default_run_id
from .db import ResultsDB, UnknownRun, describe_url
from .host_facts import gather
from .records import STATUSES, Figure, ResultRecord, RunRecord

if TYPE_CHECKING:
    from ..host import Host

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 10_000  # characters of a test's message kept in the database


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xenhil")
    group.addoption("--results-db", metavar="URL", default=None,
                    help="record the run in this results database (SQLAlchemy URL: "
                         "sqlite:///FILE, postgresql://USER@HOST/DB); needs --alluredir")
    group.addoption("--record-run", action="store_true",
                    help="the run's row exists already (made by xenhil run): only add "
                         "its hosts and results")
    group.addoption("--attempt", type=int, choices=(1, 2), default=1,
                    help="2: this session retests tests of the run (--retest-regressions)")


def pytest_configure(config: pytest.Config) -> None:
    url = config.getoption("--results-db")
    if not url:
        return
    if not config.getoption("--alluredir", None):
        raise pytest.UsageError("--results-db records allure's results: give --alluredir too")
    if config.getoption("--run-id") is None:  # the run's reports and its row share the id
        config.option.run_id = default_run_id()
    try:
        db = ResultsDB.open(url)
        if config.getoption("--record-run") and not db.has_run(config.option.run_id):
            db.close()
            raise pytest.UsageError(f"--record-run: results database {describe_url(url)} "
                                    f"has no run {config.option.run_id}")
    except (ConfigError, SQLAlchemyError) as error:
        raise pytest.UsageError(f"results database {describe_url(url)}: {error}") from None
    recorder = Recorder(config, db, describe_url(url))
    config.pluginmanager.register(recorder, "xenhil_results_recorder")
    allure_commons.plugin_manager.register(recorder)
    config.add_cleanup(recorder.close)


def stable_test_id(item: pytest.Item) -> str:
    """Module path relative to the rootdir :: name with parameters (a class's tests:
    Class::name): the same test has the same id in every run."""
    try:
        module = item.path.relative_to(item.config.rootpath).as_posix()
    except ValueError:
        module = item.path.as_posix()
    _, sep, name = item.nodeid.partition("::")
    return f"{module}::{name if sep else item.name}"


def _attachments(node: Mapping[str, Any]) -> Iterator[str]:
    for attachment in node.get("attachments") or ():
        if attachment.get("source"):
            yield str(attachment["source"])
    for step in node.get("steps") or ():
        yield from _attachments(step)


def result_from_allure(data: Mapping[str, Any], *, test_id: str, attempt: int = 1,
                       figures: tuple[Figure, ...] = ()) -> ResultRecord:
    """A result as allure-pytest writes it (its *-result.json) as a ResultRecord.
    A status allure has beyond ours ("unknown") counts as broken."""
    labels = [(label.get("name"), str(label.get("value", ""))) for label in
              data.get("labels") or ()]
    status = data.get("status") or "broken"
    message = str((data.get("statusDetails") or {}).get("message") or "")
    if status not in STATUSES:
        message = f"allure status {status}: {message}".rstrip(": ")
        status = "broken"
    start, stop = data.get("start"), data.get("stop")
    duration = (stop - start) / 1000 if isinstance(start, int) and isinstance(stop, int) \
        else 0.0
    return ResultRecord(
        test_id=test_id,
        status=status,
        area=next((value for name, value in labels if name == "area"), ""),
        hosts=tuple(dict.fromkeys(value for name, value in labels if name == "lab_host")),
        message=message[:MESSAGE_LIMIT],
        duration_s=max(duration, 0.0),
        bugs=tuple(dict.fromkeys(str(link.get("url") or link.get("name") or "")
                                 for link in data.get("links") or ()
                                 if link.get("type") == "issue")),
        evidence=tuple(f"allure-results/{source}" for source in _attachments(data)),
        attempt=attempt,
        figures=figures,
    )


def plain_verdict(statuses: list[str]) -> str:
    """A run's verdict without a baseline: broken if a test broke or none ran, failed
    if one failed, else passed."""
    if not statuses or "broken" in statuses:
        return "broken"
    return "failed" if "failed" in statuses else "passed"


def runner_identity() -> str:
    """user@machine of this process."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def harness_revision() -> str:
    """The harness checkout's git revision ("" for an installed wheel)."""
    try:
        done = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


class Recorder:
    """The database writer of one pytest session."""

    def __init__(self, config: pytest.Config, db: ResultsDB, where: str) -> None:
        self.config = config
        self.db = db
        self.where = where  # the URL without its password
        self.run_id: str = config.getoption("--run-id")
        self.attempt: int = config.getoption("--attempt")
        self.owns_run = not config.getoption("--record-run")
        self.statuses: list[str] = []
        self._item: pytest.Item | None = None
        self._allure_result: Mapping[str, Any] | None = None

    def close(self) -> None:
        allure_commons.plugin_manager.unregister(self)
        self.db.close()

    def _write(self, what: str, write: Any) -> None:
        """A failed write is logged, not raised: the run goes on, and allure-results
        still holds every result."""
        try:
            write()
        except (SQLAlchemyError, UnknownRun) as error:
            log.error("results database %s: %s not recorded: %s", self.where, what, error)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if not self.owns_run:
            return
        lab_path = Path(self.config.getoption("--lab"))
        try:
            lab = load_lab(lab_path, check_files=False).name
        except ConfigError:  # the lab fixture says what is wrong with it, in its tests
            lab = lab_path.stem
        run = RunRecord(id=self.run_id, profile="", lab=lab, kind="adhoc",
                        started=datetime.now(UTC), runner=runner_identity(),
                        revision=harness_revision())
        self._write(f"run {self.run_id}", lambda: self.db.start_run(run))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.owns_run:
            verdict = plain_verdict(self.statuses)
            self._write(f"end of run {self.run_id}",
                        lambda: self.db.end_run(self.run_id, datetime.now(UTC), verdict))

    def pytest_xenhil_host_booted(self, host: Host) -> None:
        record = gather(host)
        self._write(f"host {host.name}", lambda: self.db.add_host(self.run_id, record))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> None:
        self._item = item
        self._allure_result = None

    @allure_commons.hookimpl
    def report_result(self, result: Any) -> None:
        # What allure's file logger writes, the same way (attrs, empty values left out).
        self._allure_result = attr.asdict(result, filter=lambda _, value: value
                                          or value is False)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_logfinish(self, nodeid: str) -> Generator[None, None, None]:
        yield
        item, data = self._item, self._allure_result
        self._item = self._allure_result = None
        if item is None or item.nodeid != nodeid or data is None:
            return
        measured = item.stash.get(FIGURES, None)
        figures = tuple(Figure(name, value, unit) for name, (value, unit)
                        in (measured.values.items() if measured is not None else ()))
        record = result_from_allure(data, test_id=stable_test_id(item), attempt=self.attempt,
                                    figures=figures)
        self.statuses.append(record.status)
        self._write(f"test {record.test_id}", lambda: self.db.add_result(self.run_id, record))
