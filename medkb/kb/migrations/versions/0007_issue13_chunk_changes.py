"""chunk change log (chunk_changes): lexical indexes in every process catch up by sequence, not by re-reading

Revision ID: 0007_issue13
Revises: 0006_issue20
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0007_issue13'
down_revision = '0006_issue20'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    # Starts empty on a knowledge base that already holds chunks: an index built from a full read
    # records the log position it read at, so nothing written before the log existed is missed.
    op.create_table(
        'chunk_changes',
        sa.Column('seq', _ID, primary_key=True, autoincrement=True),
        sa.Column('chunk_id', sa.BigInteger(), nullable=False),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table('chunk_changes')
