"""The results database: runs, their hosts, results and figures, read and written as
harness.results.records.

An SQLite file by default; a PostgreSQL URL for a lab that several runners share.
`ResultsDB.open` brings the schema to the newest Alembic revision (migrations/, in
this package). Every write is its own transaction, committed at once: a run that is
killed keeps every result recorded before. Every call is bounded by the timeout
table's `results_db`: SQLite waits that long for another writer's lock (WAL: readers
never wait for a writer, nor a writer for them); PostgreSQL that long to connect, for
a lock, and for one statement.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, delete, event, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from ..errors import ConfigError
from ..timeouts import TIMEOUTS
from .models import FigureRow, Result, Run, RunHost
from .records import BASELINE_KINDS, Figure, HostRecord, ResultRecord, RunRecord

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
TIMEOUT_S = TIMEOUTS["results_db"][0]
# Taken by whoever migrates a shared PostgreSQL database, so two runners starting at
# once do not both create the tables.
MIGRATION_LOCK = 0x78656E68696C  # "xenhil"


class UnknownRun(LookupError):
    """A write names a run the database does not have."""


def data_home(reports_dir: Path) -> Path:
    """Where a lab's records across runs live (the SQLite database, the Allure history):
    $XENHIL_DATA, else the reports directory."""
    data = os.environ.get("XENHIL_DATA")
    return Path(data).expanduser() if data else reports_dir


def resolve_url(cli_value: str | None, lab_value: str | None, reports_dir: Path) -> str:
    """The database to use: --db, else $XENHIL_DB, else the lab file's, else an SQLite
    file $XENHIL_DATA/results.sqlite, else <reports_dir>/results.sqlite. A bare path
    is an SQLite file. The URL may hold a password: log `describe_url(url)` instead."""
    value = cli_value or os.environ.get("XENHIL_DB") or lab_value
    if not value:
        value = str(data_home(reports_dir) / "results.sqlite")
    if "://" in value:
        return value
    path = Path(value).expanduser().resolve()
    return URL.create("sqlite", database=str(path)).render_as_string()


def describe_url(url: str) -> str:
    """The URL without its password (in the user part or the query), for logs."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "(not a database URL)"
    if "password" in parsed.query:
        parsed = parsed.update_query_dict({"password": "***"})
    return parsed.render_as_string(hide_password=True)


def _sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    # pysqlite's own BEGIN handling leaves DDL outside transactions: ours begins them
    # (_sqlite_begin), so a migration is all or nothing.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={int(TIMEOUT_S * 1000)}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    # A writer takes the write lock at BEGIN (waiting busy_timeout for it): a deferred
    # transaction that reads first cannot wait for it later and fails at once.
    write = connection.get_execution_options().get("xenhil_write", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"results database: {describe_url(url)} is not a database URL "
                          "(sqlite:///FILE, postgresql://USER@HOST/DB, or a file path)") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": TIMEOUT_S})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":  # SQLAlchemy would pick psycopg2
            parsed = parsed.set(drivername="postgresql+psycopg")
        milliseconds = int(TIMEOUT_S * 1000)
        return create_engine(parsed, pool_pre_ping=True, pool_timeout=TIMEOUT_S,
                             connect_args={
                                 "connect_timeout": int(TIMEOUT_S),
                                 "options": f"-c statement_timeout={milliseconds} "
                                            f"-c lock_timeout={milliseconds}"})
    raise ConfigError(f"results database: {describe_url(url)}: only SQLite and PostgreSQL "
                      "are supported")


def upgrade_schema(engine: Engine) -> None:
    """Bring the schema to the newest migration (from nothing, on an empty database)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


# A host's row has exactly the record's fields.
_HOST_FIELDS = tuple(field.name for field in dataclasses.fields(HostRecord))


def _host_record(row: RunHost) -> HostRecord:
    return HostRecord(**{name: getattr(row, name) for name in _HOST_FIELDS})


def _result_record(row: Result) -> ResultRecord:
    return ResultRecord(
        test_id=row.test_id, status=row.status, area=row.area, hosts=tuple(row.hosts),
        message=row.message, duration_s=row.duration_s, bugs=tuple(row.bugs),
        evidence=tuple(row.evidence), attempt=row.attempt,
        figures=tuple(Figure(f.name, f.value, f.unit) for f in row.figures))


def _run_record(row: Run, *, hosts: bool = True, results: bool = False) -> RunRecord:
    return RunRecord(
        id=row.id, profile=row.profile, lab=row.lab, kind=row.kind,
        build_label=row.build_label, build_packages=tuple(row.build_packages),
        build_hash=row.build_hash, started=row.started, ended=row.ended,
        verdict=row.verdict, runner=row.runner, revision=row.revision,
        hosts=tuple(_host_record(host) for host in row.hosts) if hosts else (),
        results=tuple(_result_record(result) for result in row.results) if results else ())


def _host_row(host: HostRecord) -> RunHost:
    return RunHost(**dataclasses.asdict(host))


def _result_row(result: ResultRecord) -> Result:
    return Result(
        test_id=result.test_id, attempt=result.attempt, status=result.status,
        area=result.area, hosts=list(result.hosts), message=result.message,
        duration_s=result.duration_s, bugs=list(result.bugs),
        evidence=list(result.evidence),
        figures=[FigureRow(name=f.name, value=f.value, unit=f.unit)
                 for f in result.figures])


_WITH_RESULTS = (selectinload(Run.hosts),
                 selectinload(Run.results).selectinload(Result.figures))


class ResultsDB:
    """One results database. Each call opens and ends its own session; safe to share
    between threads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(engine.execution_options(xenhil_write=True),
                                   expire_on_commit=False)

    @classmethod
    def open(cls, url: str) -> ResultsDB:
        """Connect, creating or upgrading the schema to the newest revision."""
        engine = _engine(url)
        try:
            upgrade_schema(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    def describe(self) -> str:
        """Where the database is, password hidden: for logs and messages."""
        return describe_url(self.engine.url.render_as_string(hide_password=False))

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Session]:
        with self._write.begin() as session:
            yield session

    @staticmethod
    def _run_row(session: Session, run_id: str) -> Run:
        row = session.get(Run, run_id)
        if row is None:
            raise UnknownRun(f"results database: no run {run_id!r}")
        return row

    # Writing

    def start_run(self, run: RunRecord) -> None:
        """Record a run (with its hosts and results, if the record has them). A run of
        that id already recorded is replaced: a rerun with the same id starts over."""
        with self._writing() as session:
            session.execute(delete(Run).where(Run.id == run.id))
            session.add(Run(
                id=run.id, profile=run.profile, lab=run.lab, kind=run.kind,
                build_label=run.build_label, build_packages=list(run.build_packages),
                build_hash=run.build_hash, started=run.started, ended=run.ended,
                verdict=run.verdict, runner=run.runner, revision=run.revision,
                hosts=[_host_row(host) for host in run.hosts],
                results=[_result_row(result) for result in run.results]))

    def add_host(self, run_id: str, host: HostRecord) -> None:
        """What a host of the run runs; a host recorded before is replaced (booted again)."""
        with self._writing() as session:
            self._run_row(session, run_id)
            session.execute(delete(RunHost).where(RunHost.run_id == run_id,
                                                  RunHost.name == host.name))
            row = _host_row(host)
            row.run_id = run_id
            session.add(row)

    def add_result(self, run_id: str, result: ResultRecord) -> None:
        """One finished test, committed at once. The same test and attempt recorded
        before is replaced."""
        with self._writing() as session:
            self._run_row(session, run_id)
            session.execute(delete(Result).where(Result.run_id == run_id,
                                                 Result.test_id == result.test_id,
                                                 Result.attempt == result.attempt))
            row = _result_row(result)
            row.run_id = run_id
            session.add(row)

    def end_run(self, run_id: str, ended: datetime, verdict: str) -> None:
        with self._writing() as session:
            row = self._run_row(session, run_id)
            row.ended = ended
            row.verdict = verdict

    # Reading

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run with its hosts and its results (in the order they were recorded),
        each with its figures."""
        with self._read() as session:
            row = session.scalar(select(Run).where(Run.id == run_id).options(*_WITH_RESULTS))
            return None if row is None else _run_record(row, results=True)

    def has_run(self, run_id: str) -> bool:
        with self._read() as session:
            return session.scalar(select(Run.id).where(Run.id == run_id)) is not None

    def runs(self, limit: int = 20, profile: str | None = None,
             lab: str | None = None) -> list[RunRecord]:
        """The newest runs first, with their hosts; their `results` are left empty
        (get_run has them)."""
        stmt = select(Run).options(selectinload(Run.hosts))
        if profile is not None:
            stmt = stmt.where(Run.profile == profile)
        if lab is not None:
            stmt = stmt.where(Run.lab == lab)
        stmt = stmt.order_by(Run.started.desc().nulls_last(), Run.id.desc()).limit(limit)
        with self._read() as session:
            return [_run_record(row) for row in session.scalars(stmt)]

    def _started(self, session: Session, run: RunRecord) -> datetime | None:
        if run.started is not None:
            return run.started
        return session.scalar(select(Run.started).where(Run.id == run.id))

    def _baselines(self, session: Session, run: RunRecord, limit: int,
                   results: bool) -> list[RunRecord]:
        stmt = select(Run).where(Run.profile == run.profile, Run.lab == run.lab,
                                 Run.kind.in_(BASELINE_KINDS), Run.verdict == "passed",
                                 Run.id != run.id, Run.started.is_not(None))
        started = self._started(session, run)
        if started is not None:
            stmt = stmt.where(Run.started < started)
        stmt = stmt.order_by(Run.started.desc(), Run.id.desc()).limit(limit)
        stmt = stmt.options(*_WITH_RESULTS) if results \
            else stmt.options(selectinload(Run.hosts))
        return [_run_record(row, results=results) for row in session.scalars(stmt)]

    def baseline_for(self, run: RunRecord) -> RunRecord | None:
        """The last run started before `run` with its profile and lab, of a baseline
        kind (nightly, qualification), whose verdict is "passed"; with its results."""
        with self._read() as session:
            found = self._baselines(session, run, 1, results=True)
        return found[0] if found else None

    def baseline_history(self, run: RunRecord, limit: int) -> list[RunRecord]:
        """The last `limit` runs that could be `run`'s baseline, newest first, with
        their results (for the medians of figures)."""
        with self._read() as session:
            return self._baselines(session, run, limit, results=True)

    def ever_passed(self, lab: str, before_run: str) -> set[str]:
        """Test ids that passed in any run on `lab` started before run `before_run`
        (any run on the lab but that one, if it has no start time)."""
        stmt = (select(Result.test_id).distinct().join(Run)
                .where(Run.lab == lab, Result.status == "passed", Run.id != before_run))
        with self._read() as session:
            started = session.scalar(select(Run.started).where(Run.id == before_run))
            if started is not None:
                stmt = stmt.where(Run.started < started)
            return set(session.scalars(stmt))

    def history(self, test_id: str, host: str | None = None,
                limit: int = 20) -> list[tuple[RunRecord, ResultRecord]]:
        """The test's last `limit` results, newest run first (a retest before its first
        attempt), each with its run (hosts and results of the run left out). With
        `host`: only results on that host."""
        stmt = (select(Result).join(Run).where(Result.test_id == test_id)
                .order_by(Run.started.desc().nulls_last(), Run.id.desc(),
                          Result.attempt.desc())
                .options(selectinload(Result.figures), selectinload(Result.run)))
        found: list[tuple[RunRecord, ResultRecord]] = []
        page = max(limit, 50)
        with self._read() as session:
            for offset in range(0, 1 << 62, page):
                rows: Sequence[Result] = session.scalars(stmt.offset(offset).limit(page)).all()
                for row in rows:
                    if host is None or host in row.hosts:
                        found.append((_run_record(row.run, hosts=False), _result_record(row)))
                        if len(found) == limit:
                            return found
                if len(rows) < page:
                    break
        return found
