"""cohort entries may stand for several events of one person, period and mask (events = how many)

Revision ID: 0009_issue20
Revises: 0008_issue20

A run whose entries all end at their observation period's end stores one row per (person, period, rule mask) instead
of one per event (medkb.cohorts.engine.compacts): ``events`` says how many qualified events the row stands for.
Existing rows are single events (1). Downgrade: the older code reads every row as one event, so runs with a row
standing for more are deleted (a count regenerates its run; stored per-event runs are kept).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_issue20"
down_revision = "0008_issue20"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cohort_entries", sa.Column("events", sa.BigInteger(), nullable=False, server_default="1"))


def downgrade() -> None:
    op.execute("DELETE FROM cohort_runs WHERE id IN (SELECT run_id FROM cohort_entries WHERE events > 1)")
    op.execute("DELETE FROM cohort_entries WHERE run_id NOT IN (SELECT id FROM cohort_runs)")
    op.drop_column("cohort_entries", "events")
