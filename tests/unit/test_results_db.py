"""The results database on SQLite and on a real PostgreSQL (started here, on a unix
socket in a temporary directory): migrations, every API call, a killed writer."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, select

from harness.errors import ConfigError
from harness.results.db import MIGRATIONS, ResultsDB, UnknownRun, describe_url, resolve_url
from harness.results.models import Base, Run
from harness.results.records import Figure, HostRecord, ResultRecord, RunRecord

from .postgres import PostgresServer, postgres_bin

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (make setup installs Debian's postgresql)")
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/results.sqlite"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()


@pytest.fixture
def db(url: str) -> Iterator[ResultsDB]:
    opened = ResultsDB.open(url)
    try:
        yield opened
    finally:
        opened.close()


def run_record(run_id: str, started: datetime, *, profile: str = "default",
               lab: str = "vlab", kind: str = "nightly", verdict: str = "passed",
               results: tuple[ResultRecord, ...] = ()) -> RunRecord:
    return RunRecord(id=run_id, profile=profile, lab=lab, kind=kind, started=started,
                     ended=started + timedelta(hours=1), verdict=verdict, results=results)


def passed(test_id: str, *hosts: str) -> ResultRecord:
    return ResultRecord(test_id=test_id, status="passed", hosts=hosts)


def test_migration_creates_every_table_from_an_empty_database(url: str) -> None:
    ResultsDB.open(url).close()
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            assert {"run", "run_host", "result", "figure", "alembic_version"} <= tables
            context = MigrationContext.configure(connection)
            head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
            assert context.get_current_revision() == head
            # the models describe exactly what the migrations made
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_opening_again_keeps_the_data(url: str) -> None:
    with_data = ResultsDB.open(url)
    with_data.start_run(run_record("r1", T0))
    with_data.close()
    reopened = ResultsDB.open(url)
    try:
        assert [run.id for run in reopened.runs()] == ["r1"]
    finally:
        reopened.close()


def test_a_run_round_trips_with_hosts_results_and_figures(db: ResultsDB) -> None:
    run = RunRecord(id="20261101-020000", profile="default", lab="vlab", kind="nightly",
                    build_label="Debian 4.17.7", build_packages=("xen-hypervisor-4.17-amd64 "
                                                                 "4.17.7+1-g1f8ec0f-1",),
                    build_hash="ab12", started=T0, runner="root@ci", revision="f4bd044")
    db.start_run(run)
    host = HostRecord(name="vlab1", xen_version="4.17.7", xen_cmdline="console=com1",
                      dom0_kernel="6.1.0-50-amd64", cpu_model="AMD EPYC",
                      microcode="0x1000065", firmware="SeaBIOS 1.16.2 (04/01/2014)",
                      bmc_firmware="1.28")
    db.add_host(run.id, host)
    first = ResultRecord(test_id="testsuites/boot/test_boot.py::test_xl_info[vlab1]",
                         status="passed", area="boot", hosts=("vlab1",), duration_s=2.5,
                         figures=(Figure("xen banner", 12.25, "s"),
                                  Figure("dom0 kernel", 30.5, "s")))
    second = ResultRecord(test_id="testsuites/networking/test_bridge.py::test_ping[vlab1]",
                          status="failed", area="networking", hosts=("vlab1", "vlab2"),
                          message="AssertionError: 12 % loss", bugs=("bsc#1234567",),
                          evidence=("allure-results/abc-attachment.txt",))
    db.add_result(run.id, first)
    db.add_result(run.id, second)
    db.end_run(run.id, T0 + timedelta(minutes=17), "failed")

    stored = db.get_run(run.id)
    assert stored is not None
    assert stored == RunRecord(**{**run.__dict__, "ended": T0 + timedelta(minutes=17),
                                  "verdict": "failed", "hosts": (host,),
                                  "results": (first, second)})
    assert stored.started is not None and stored.started.tzinfo is not None
    assert db.get_run("no-such-run") is None
    assert db.has_run(run.id) and not db.has_run("no-such-run")


def test_start_run_replaces_a_run_of_the_same_id(db: ResultsDB) -> None:
    db.start_run(run_record("r1", T0, results=(passed("t::a"),)))
    db.start_run(run_record("r1", T0 + timedelta(days=1), kind="adhoc"))
    stored = db.get_run("r1")
    assert stored is not None and stored.kind == "adhoc" and stored.results == ()


def test_a_host_booted_again_and_a_test_recorded_again_replace_their_rows(
        db: ResultsDB) -> None:
    db.start_run(run_record("r1", T0))
    db.add_host("r1", HostRecord("vlab1", xen_version="4.17.5"))
    db.add_host("r1", HostRecord("vlab1", xen_version="4.17.7"))
    db.add_result("r1", ResultRecord("t::a", "failed", figures=(Figure("x", 1, "s"),)))
    db.add_result("r1", ResultRecord("t::a", "passed"))
    db.add_result("r1", ResultRecord("t::a", "passed", attempt=2))
    stored = db.get_run("r1")
    assert stored is not None
    assert [host.xen_version for host in stored.hosts] == ["4.17.7"]
    assert [(r.status, r.attempt, r.figures) for r in stored.results] == [
        ("passed", 1, ()), ("passed", 2, ())]


def test_writes_to_an_unknown_run_are_refused(db: ResultsDB) -> None:
    with pytest.raises(UnknownRun):
        db.add_result("nope", passed("t::a"))
    with pytest.raises(UnknownRun):
        db.add_host("nope", HostRecord("vlab1"))
    with pytest.raises(UnknownRun):
        db.end_run("nope", T0, "passed")


def test_runs_newest_first_with_filters_and_limit(db: ResultsDB) -> None:
    db.start_run(run_record("old", T0, results=(passed("t::a"),)))
    db.start_run(run_record("new", T0 + timedelta(days=2)))
    db.start_run(run_record("other-lab", T0 + timedelta(days=1), lab="rack"))
    db.start_run(run_record("boot", T0 + timedelta(days=3), profile="boot"))
    assert [run.id for run in db.runs()] == ["boot", "new", "other-lab", "old"]
    assert [run.id for run in db.runs(limit=2)] == ["boot", "new"]
    assert [run.id for run in db.runs(lab="vlab", profile="default")] == ["new", "old"]
    assert all(run.results == () for run in db.runs())


def test_the_baseline_is_the_last_passed_nightly_or_qualification_before(
        db: ResultsDB) -> None:
    day = timedelta(days=1)
    db.start_run(run_record("good-1", T0))
    db.start_run(run_record("qual", T0 + day, kind="qualification",
                            results=(passed("t::a"),)))
    db.start_run(run_record("failed", T0 + 2 * day, verdict="failed"))
    db.start_run(run_record("adhoc", T0 + 3 * day, kind="adhoc"))
    db.start_run(run_record("boot", T0 + 4 * day, profile="boot"))
    db.start_run(run_record("rack", T0 + 5 * day, lab="rack"))
    current = run_record("current", T0 + 6 * day, verdict="")
    db.start_run(current)
    db.start_run(run_record("later", T0 + 7 * day))

    baseline = db.baseline_for(current)
    assert baseline is not None and baseline.id == "qual"
    assert baseline.results == (passed("t::a"),)
    # a record without its start time: the stored one counts
    assert db.baseline_for(RunRecord("current", "default", "vlab", "nightly")) == baseline
    assert db.baseline_for(run_record("first", T0 - day)) is None
    assert [run.id for run in db.baseline_history(current, 5)] == ["qual", "good-1"]
    assert [run.id for run in db.baseline_history(current, 1)] == ["qual"]
    assert db.baseline_history(current, 5)[0].results == (passed("t::a"),)


def test_ever_passed_looks_at_earlier_runs_of_the_lab_only(db: ResultsDB) -> None:
    day = timedelta(days=1)
    db.start_run(run_record("r1", T0, verdict="failed", kind="adhoc", results=(
        passed("t::a"), ResultRecord("t::b", "failed"))))
    db.start_run(run_record("rack", T0 + day, lab="rack", results=(passed("t::c"),)))
    db.start_run(run_record("r2", T0 + 2 * day, results=(passed("t::b"),)))
    db.start_run(run_record("r3", T0 + 3 * day, results=(passed("t::d"),)))
    assert db.ever_passed("vlab", "r2") == {"t::a"}
    assert db.ever_passed("vlab", "r3") == {"t::a", "t::b"}
    assert db.ever_passed("rack", "r3") == {"t::c"}


def test_history_newest_first_per_host_with_figures(db: ResultsDB) -> None:
    day = timedelta(days=1)
    test = "testsuites/migration/test_live.py::test_round_trip"
    for number in range(4):
        host = "vlab1" if number % 2 == 0 else "vlab2"
        figure = Figure("downtime", 0.1 * (number + 1), "s")
        db.start_run(run_record(f"r{number}", T0 + number * day, results=(
            ResultRecord(test, "passed", hosts=(host,), figures=(figure,)),
            passed("t::other", host))))
    db.add_result("r3", ResultRecord(test, "passed", hosts=("vlab2",), attempt=2))

    everything = db.history(test)
    assert [(run.id, result.attempt) for run, result in everything] == [
        ("r3", 2), ("r3", 1), ("r2", 1), ("r1", 1), ("r0", 1)]
    assert everything[1][1].figures == (Figure("downtime", 0.4, "s"),)
    assert [run.id for run, _ in db.history(test, host="vlab1")] == ["r2", "r0"]
    assert [run.id for run, _ in db.history(test, limit=2)] == ["r3", "r3"]
    assert db.history("t::never") == []


def test_a_reader_does_not_block_a_writer(url: str, db: ResultsDB) -> None:
    db.start_run(run_record("r1", T0))
    reader = ResultsDB.open(url)
    try:
        with reader._read() as session:  # a read transaction left open
            assert session.scalar(select(Run.id)) == "r1"
            start = time.monotonic()
            db.add_result("r1", passed("t::a"))
            assert time.monotonic() - start < 5
    finally:
        reader.close()
    stored = db.get_run("r1")
    assert stored is not None and stored.results == (passed("t::a"),)


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from datetime import UTC, datetime
    from harness.results.db import ResultsDB, _result_row
    from harness.results.records import ResultRecord, RunRecord
    from harness.results.models import Result

    db = ResultsDB.open(sys.argv[1])
    db.start_run(RunRecord("killed", "default", "vlab", "nightly",
                           started=datetime.now(UTC)))
    db.add_result("killed", ResultRecord("t::first", "passed"))
    db.add_result("killed", ResultRecord("t::second", "failed", message="boom"))
    with db._writing() as session:  # the third is being written when the kill comes
        row = _result_row(ResultRecord("t::third", "passed"))
        row.run_id = "killed"
        session.add(row)
        session.flush()
        os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_killed_writer_leaves_what_it_committed(url: str) -> None:
    writer = subprocess.run([sys.executable, "-c", KILLED_WRITER, url], timeout=60,
                            capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert writer.returncode == -9, writer.stderr
    db = ResultsDB.open(url)
    try:
        stored = db.get_run("killed")
        assert stored is not None
        assert [(r.test_id, r.status) for r in stored.results] == [
            ("t::first", "passed"), ("t::second", "failed")]
        # the dead writer's lock is gone: the next writer goes on
        db.add_result("killed", passed("t::third"))
        db.end_run("killed", datetime.now(UTC), "broken")
    finally:
        db.close()


def test_resolve_url_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XENHIL_DB", raising=False)
    monkeypatch.delenv("XENHIL_DATA", raising=False)
    reports = tmp_path / "reports"
    assert resolve_url(None, None, reports) == f"sqlite:///{reports}/results.sqlite"
    monkeypatch.setenv("XENHIL_DATA", str(tmp_path / "data"))
    assert resolve_url(None, None, reports) == f"sqlite:///{tmp_path}/data/results.sqlite"
    assert resolve_url(None, "postgresql://lab@db/xenhil", reports) \
        == "postgresql://lab@db/xenhil"
    monkeypatch.setenv("XENHIL_DB", "sqlite:////srv/env.sqlite")
    assert resolve_url(None, "postgresql://lab@db/xenhil", reports) \
        == "sqlite:////srv/env.sqlite"
    monkeypatch.chdir(tmp_path)
    assert resolve_url("mine.sqlite", "postgresql://lab@db/xenhil", reports) \
        == f"sqlite:///{tmp_path}/mine.sqlite"


def test_describe_url_hides_passwords() -> None:
    assert describe_url("postgresql://lab:s3cret@db.example:5432/xenhil") \
        == "postgresql://lab:***@db.example:5432/xenhil"
    assert "s3cret" not in describe_url("postgresql://lab@db/xenhil?password=s3cret")
    assert describe_url("not a url") == "(not a database URL)"


def test_an_unsupported_or_malformed_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="only SQLite and PostgreSQL"):
        ResultsDB.open("mysql://lab@db/xenhil")
    with pytest.raises(ConfigError, match="not a database URL"):
        ResultsDB.open("::::")
