"""edge details (severity, wording, origin), the fake-data flag on sources, entity links of procedures/allergies

Revision ID: 0004_issue11
Revises: 0003_issue12
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0004_issue11'
down_revision = '0003_issue12'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('edges', schema=None) as batch_op:
        batch_op.add_column(sa.Column('details', sa.JSON(), nullable=True))
    with op.batch_alter_table('sources', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fake_data', sa.Boolean(), nullable=False, server_default=sa.false()))
    for table in ('procedures', 'allergies'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('entity_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                                          nullable=True))
            batch_op.create_foreign_key(f'fk_{table}_entity_id', 'entities', ['entity_id'], ['id'],
                                        ondelete='SET NULL')


def downgrade() -> None:
    for table in ('procedures', 'allergies'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f'fk_{table}_entity_id', type_='foreignkey')
            batch_op.drop_column('entity_id')
    with op.batch_alter_table('sources', schema=None) as batch_op:
        batch_op.drop_column('fake_data')
    with op.batch_alter_table('edges', schema=None) as batch_op:
        batch_op.drop_column('details')
