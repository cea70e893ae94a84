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
        op.add_column(table, sa.Column('entity_id', _ID, nullable=True))
        if op.get_context().dialect.name != 'sqlite':
            # SQLite cannot add a constraint in place; the store clears these links itself on entity deletes.
            op.create_foreign_key(f'fk_{table}_entity_id', table, 'entities', ['entity_id'], ['id'],
                                  ondelete='SET NULL')


def downgrade() -> None:
    for table in ('procedures', 'allergies'):
        if op.get_context().dialect.name != 'sqlite':
            op.drop_constraint(f'fk_{table}_entity_id', table, type_='foreignkey')
        op.drop_column(table, 'entity_id')
    op.drop_column('sources', 'fake_data')
    op.drop_column('edges', 'details')
