"""cohort runs and their entries (per-event inclusion-rule masks)

Revision ID: 0004_issue20
Revises: 0003_issue12
Create Date: 2026-12-02 09:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_issue20"
down_revision = "0003_issue12"
branch_labels = None
depends_on = None


def upgrade() -> None:
    big = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "cohort_runs",
        sa.Column("id", big, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("definition_hash", sa.String(length=64), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_cohort_runs_lookup", "cohort_runs", ["tenant_id", "definition_hash"])
    op.create_table(
        "cohort_entries",
        sa.Column("id", big, autoincrement=True, nullable=False),
        sa.Column("run_id", big, nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("op_start", sa.Date(), nullable=False),
        sa.Column("op_end", sa.Date(), nullable=False),
        sa.Column("mask", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["cohort_runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_cohort_entries_run", "cohort_entries", ["run_id", "patient_id", "start_date"])


def downgrade() -> None:
    op.drop_table("cohort_entries")
    op.drop_table("cohort_runs")
