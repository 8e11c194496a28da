"""history chain seals

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 02:02:01.897969
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

import crm.models

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('chain_seals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('table_name', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('last_id', sa.Integer(), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('chain', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', crm.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('chain_seals', schema=None) as batch_op:
        batch_op.create_index('ix_chain_seals_table_last', ['table_name', 'last_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('chain_seals', schema=None) as batch_op:
        batch_op.drop_index('ix_chain_seals_table_last')

    op.drop_table('chain_seals')
