"""The results database's tables, as SQLAlchemy 2 declarative models.

The schema itself is made by the Alembic migrations in harness/results/migrations/;
these models must describe the same tables (tests/unit/test_results_db.py compares
them with what the migrations made).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    """A UTC time, stored without zone (SQLite keeps none) and read back aware.
    Naive values are taken as UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is None:
            return value
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None,
                             dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class Run(Base):
    __tablename__ = "run"
    __table_args__ = (Index("ix_run_lab_profile_started", "lab", "profile", "started"),)

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    profile: Mapped[str] = mapped_column(String(200))
    lab: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    build_label: Mapped[str] = mapped_column(String(500), default="")
    build_packages: Mapped[list[str]] = mapped_column(JSON, default=list)
    build_hash: Mapped[str] = mapped_column(String(128), default="")
    started: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended: Mapped[datetime | None] = mapped_column(UTCDateTime)
    verdict: Mapped[str] = mapped_column(String(40), default="")
    runner: Mapped[str] = mapped_column(String(300), default="")
    revision: Mapped[str] = mapped_column(String(100), default="")

    hosts: Mapped[list[RunHost]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True,
        order_by="RunHost.name")
    results: Mapped[list[Result]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True,
        order_by="Result.id")


class RunHost(Base):
    __tablename__ = "run_host"
    __table_args__ = (UniqueConstraint("run_id", "name", name="uq_run_host_run_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    xen_version: Mapped[str] = mapped_column(String(200), default="")
    xen_cmdline: Mapped[str] = mapped_column(Text, default="")
    dom0_kernel: Mapped[str] = mapped_column(String(200), default="")
    cpu_model: Mapped[str] = mapped_column(String(200), default="")
    microcode: Mapped[str] = mapped_column(String(200), default="")
    firmware: Mapped[str] = mapped_column(String(500), default="")
    bmc_firmware: Mapped[str] = mapped_column(String(200), default="")

    run: Mapped[Run] = relationship(back_populates="hosts")


class Result(Base):
    __tablename__ = "result"
    __table_args__ = (
        UniqueConstraint("run_id", "test_id", "attempt", name="uq_result_run_test_attempt"),
        Index("ix_result_test_id", "test_id"),
    )

    # Autoincrement: a run's results in the order they finished.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    test_id: Mapped[str] = mapped_column(String(1000))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(20))
    area: Mapped[str] = mapped_column(String(100), default="")
    hosts: Mapped[list[str]] = mapped_column(JSON, default=list)
    message: Mapped[str] = mapped_column(Text, default="")
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    bugs: Mapped[list[str]] = mapped_column(JSON, default=list)
    evidence: Mapped[list[str]] = mapped_column(JSON, default=list)

    run: Mapped[Run] = relationship(back_populates="results")
    figures: Mapped[list[FigureRow]] = relationship(
        back_populates="result", cascade="all, delete-orphan", passive_deletes=True,
        order_by="FigureRow.id")


class FigureRow(Base):
    __tablename__ = "figure"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("result.id", ondelete="CASCADE"),
                                           index=True)
    name: Mapped[str] = mapped_column(String(200))
    value: Mapped[float] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(40))

    result: Mapped[Result] = relationship(back_populates="figures")
