"""The first schema: run, run_host, result, figure.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "run",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("profile", sa.String(200), nullable=False),
        sa.Column("lab", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("build_label", sa.String(500), nullable=False),
        sa.Column("build_packages", sa.JSON(), nullable=False),
        sa.Column("build_hash", sa.String(128), nullable=False),
        sa.Column("started", sa.DateTime(), nullable=True),
        sa.Column("ended", sa.DateTime(), nullable=True),
        sa.Column("verdict", sa.String(40), nullable=False),
        sa.Column("runner", sa.String(300), nullable=False),
        sa.Column("revision", sa.String(100), nullable=False),
    )
    op.create_index("ix_run_lab_profile_started", "run", ["lab", "profile", "started"])
    op.create_table(
        "run_host",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(200), sa.ForeignKey("run.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("xen_version", sa.String(200), nullable=False),
        sa.Column("xen_cmdline", sa.Text(), nullable=False),
        sa.Column("dom0_kernel", sa.String(200), nullable=False),
        sa.Column("cpu_model", sa.String(200), nullable=False),
        sa.Column("microcode", sa.String(200), nullable=False),
        sa.Column("firmware", sa.String(500), nullable=False),
        sa.Column("bmc_firmware", sa.String(200), nullable=False),
        sa.UniqueConstraint("run_id", "name", name="uq_run_host_run_name"),
    )
    op.create_table(
        "result",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(200), sa.ForeignKey("run.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("test_id", sa.String(1000), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("area", sa.String(100), nullable=False),
        sa.Column("hosts", sa.JSON(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("bugs", sa.JSON(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.UniqueConstraint("run_id", "test_id", "attempt",
                            name="uq_result_run_test_attempt"),
    )
    op.create_index("ix_result_test_id", "result", ["test_id"])
    op.create_table(
        "figure",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("result_id", sa.Integer(),
                  sa.ForeignKey("result.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("unit", sa.String(40), nullable=False),
    )
    op.create_index("ix_figure_result_id", "figure", ["result_id"])


def downgrade() -> None:
    op.drop_table("figure")
    op.drop_table("result")
    op.drop_table("run_host")
    op.drop_table("run")
