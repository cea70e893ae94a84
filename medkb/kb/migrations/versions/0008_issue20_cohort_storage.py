"""cohort entries clustered by (run, person, start date, event); deaths by date on patients

Revision ID: 0008_issue20
Revises: 0007_issue13

cohort_entries had a row id and a secondary (run, person, start) index: every stored entry was written to two
b-trees and every count read an entry's mask and dates through a row-id lookup. Clustered on the key the counts read
in (a WITHOUT ROWID table on SQLite, the primary key on InnoDB), an entry is one b-tree insert and a run is read in
order from one range. Rows of existing runs are kept. ix_patients_death: a cohort's death criterion reads the
tenant's deceased patients instead of every patient of the tenant.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_issue20"
down_revision = "0007_issue13"
branch_labels = None
depends_on = None

_BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_COLS = "run_id, patient_id, event_id, start_date, end_date, op_start, op_end, mask"


def _entries(name: str, clustered: bool) -> None:
    cols = [
        sa.Column("run_id", _BIG, nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("op_start", sa.Date(), nullable=False),
        sa.Column("op_end", sa.Date(), nullable=False),
        sa.Column("mask", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["cohort_runs.id"], ondelete="CASCADE"),
    ]
    if clustered:
        op.create_table(name, *cols, sa.PrimaryKeyConstraint("run_id", "patient_id", "start_date", "event_id"),
                        sqlite_with_rowid=False)
    else:
        op.create_table(name, sa.Column("id", _BIG, autoincrement=True, nullable=False), *cols,
                        sa.PrimaryKeyConstraint("id"))


def _move(clustered: bool) -> None:
    """Into a new table (SQLite cannot change a primary key in place), rows kept, then renamed over the old."""
    _entries("cohort_entries_new", clustered)
    op.execute(f"INSERT INTO cohort_entries_new ({_COLS}) SELECT {_COLS} FROM cohort_entries")
    op.drop_table("cohort_entries")  # its index with it (InnoDB refuses to drop an index a foreign key uses)
    op.rename_table("cohort_entries_new", "cohort_entries")
    if not clustered:
        op.create_index("ix_cohort_entries_run", "cohort_entries", ["run_id", "patient_id", "start_date"])


def upgrade() -> None:
    op.create_index("ix_patients_death", "patients", ["tenant_id", "death_date", "id"])
    _move(clustered=True)


def downgrade() -> None:
    _move(clustered=False)
    op.drop_index("ix_patients_death", table_name="patients")
