"""edge details (severity, wording, origin), the fake-data flag on sources, entity links of procedures/allergies

Revision ID: 0005_issue11
Revises: 0004_issue20

Plain ADD COLUMN only, never a batch "move and copy" on SQLite: re-creating ``sources`` there drops the old
table, and its ON DELETE CASCADE children (documents, edges, names) would go with it.
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0005_issue11'
down_revision = '0004_issue20'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.add_column('edges', sa.Column('details', sa.JSON(), nullable=True))
    op.add_column('sources', sa.Column('fake_data', sa.Boolean(), nullable=False, server_default=sa.text('0')))
    for table in ('procedures', 'allergies'):
        # No foreign key: SQLite cannot add one in place, and the store clears these links itself when it
        # deletes entities (the same on every backend).
        op.add_column(table, sa.Column('entity_id', _ID, nullable=True))


def downgrade() -> None:
    for table in ('procedures', 'allergies'):
        op.drop_column(table, 'entity_id')
    op.drop_column('sources', 'fake_data')
    op.drop_column('edges', 'details')
