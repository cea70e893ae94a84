"""SQLite stores dates as Julian day numbers (medkb.kb.types.Day)

Revision ID: 0010_issue20
Revises: 0009_issue20

Every DATE column of a SQLite knowledge base held ISO text ('2023-01-01'); it now holds the day's Julian day number
(2459946), which SQLite's date functions read as the same day (``date(start)`` gives the text back). Cohort SQL then
compares and offsets dates as integers. The declared column types stay DATE (numeric affinity keeps the integers).
MySQL, MariaDB and TiDB keep their DATE columns: nothing changes there. Downgrade turns the numbers back into text.
"""
from __future__ import annotations

from alembic import op

revision = "0010_issue20"
down_revision = "0009_issue20"
branch_labels = None
depends_on = None

DATE_COLUMNS = {
    "documents": ["effective_date"],
    "patients": ["death_date"],
    "encounters": ["start", "stop"],
    "conditions": ["start", "stop"],
    "medications": ["start", "stop"],
    "observations": ["effective"],
    "allergies": ["start", "stop"],
    "procedures": ["performed"],
    "observation_periods": ["start", "stop"],
    "cohort_entries": ["start_date", "end_date", "op_start", "op_end"],
}


def _convert(to_days: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table, columns in DATE_COLUMNS.items():
        # julianday() of a date is its midnight (x.5); the day number is the noon that follows
        sets = ", ".join(f'"{c}" = CAST(julianday("{c}") + 0.5 AS INTEGER)' if to_days else f'"{c}" = date("{c}")'
                         for c in columns)
        kind = "text" if to_days else "integer"
        op.execute(f'UPDATE "{table}" SET {sets} WHERE ' + " OR ".join(f"typeof(\"{c}\") = '{kind}'" for c in columns))


def upgrade() -> None:
    _convert(to_days=True)


def downgrade() -> None:
    _convert(to_days=False)
