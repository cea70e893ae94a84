"""OMOP concept ids on record rows, observation periods, death dates, cohort lookup indexes

Revision ID: 0002_issue20
Revises: 0001
Create Date: 2026-12-02 08:50:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_issue20"
down_revision = "0001"
branch_labels = None
depends_on = None

_EVENTS = {"encounters": "start", "conditions": "start", "medications": "start",
           "observations": "effective", "procedures": "performed"}


def upgrade() -> None:
    for table in (*_EVENTS, "allergies"):
        with op.batch_alter_table(table) as b:
            b.add_column(sa.Column("concept_id", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("observations") as b:
        b.add_column(sa.Column("domain", sa.String(length=16), nullable=True))
    with op.batch_alter_table("patients") as b:
        b.add_column(sa.Column("death_date", sa.Date(), nullable=True))
    for table, date_col in _EVENTS.items():
        op.create_index(f"ix_{table}_concept", table, ["tenant_id", "concept_id", "patient_id", date_col])
        op.create_index(f"ix_{table}_code", table, ["tenant_id", "code_system", "code", "patient_id"])
    op.create_table(
        "observation_periods",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("start", sa.Date(), nullable=False),
        sa.Column("stop", sa.Date(), nullable=False),
        sa.Column("derived", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_observation_periods_tenant_id", "observation_periods", ["tenant_id"])
    op.create_index("ix_observation_periods_patient_id", "observation_periods", ["patient_id"])


def downgrade() -> None:
    op.drop_table("observation_periods")
    for table in _EVENTS:
        op.drop_index(f"ix_{table}_code", table_name=table)
        op.drop_index(f"ix_{table}_concept", table_name=table)
    with op.batch_alter_table("patients") as b:
        b.drop_column("death_date")
    with op.batch_alter_table("observations") as b:
        b.drop_column("domain")
    for table in (*_EVENTS, "allergies"):
        with op.batch_alter_table(table) as b:
            b.drop_column("concept_id")
