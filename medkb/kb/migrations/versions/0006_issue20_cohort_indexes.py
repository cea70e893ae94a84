"""covering cohort indexes: event lookups by concept or code carry (person, dates[, domain]); periods by person

Revision ID: 0006_issue20
Revises: 0005_issue11

The cohort engine reads a concept set's events as (person, start, stop[, domain]) and each person's observation
periods; with these columns in the index SQLite and InnoDB answer both from the index alone. concept_id follows the
code in the code index, so "this code, no concept id" (records not from OMOP) is one index range, not a scan of every
row carrying the code.
"""
from __future__ import annotations

from alembic import op

revision = "0006_issue20"
down_revision = "0005_issue11"
branch_labels = None
depends_on = None

# table → (lookup columns after the code, carried columns); frozen copy of models.COHORT_INDEX_COLUMNS
COHORT_INDEXES = {
    "encounters": (["concept_id"], ["patient_id", "start", "stop"]),
    "conditions": (["concept_id"], ["patient_id", "start", "stop"]),
    "medications": (["concept_id"], ["patient_id", "start", "stop"]),
    "observations": (["concept_id", "domain"], ["patient_id", "effective"]),
    "procedures": (["concept_id"], ["patient_id", "performed"]),
}
_OLD_DATES = {"encounters": "start", "conditions": "start", "medications": "start",
              "observations": "effective", "procedures": "performed"}


def upgrade() -> None:
    for table, (lookup, carried) in COHORT_INDEXES.items():
        op.drop_index(f"ix_{table}_concept", table_name=table)
        op.drop_index(f"ix_{table}_code", table_name=table)
        op.create_index(f"ix_{table}_concept", table, ["tenant_id", *lookup, *carried])
        op.create_index(f"ix_{table}_code", table, ["tenant_id", "code_system", "code", *lookup, *carried])
    op.create_index("ix_observation_periods_person", "observation_periods", ["tenant_id", "patient_id", "start", "stop"])


def downgrade() -> None:
    op.drop_index("ix_observation_periods_person", table_name="observation_periods")
    for table, date_col in _OLD_DATES.items():
        op.drop_index(f"ix_{table}_concept", table_name=table)
        op.drop_index(f"ix_{table}_code", table_name=table)
        op.create_index(f"ix_{table}_concept", table, ["tenant_id", "concept_id", "patient_id", date_col])
        op.create_index(f"ix_{table}_code", table, ["tenant_id", "code_system", "code", "patient_id"])
