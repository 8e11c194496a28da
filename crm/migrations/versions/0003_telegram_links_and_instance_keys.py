"""telegram links and instance keys

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 01:22:33.893911
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

import crm.models

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('instance_keys',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('value', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('created_at', crm.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('telegram_links',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('created_at', crm.models.UTCDateTime(), nullable=False),
    sa.Column('expires_at', crm.models.UTCDateTime(), nullable=False),
    sa.Column('used_at', crm.models.UTCDateTime(), nullable=True),
    sa.Column('chat_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    with op.batch_alter_table('telegram_links', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_telegram_links_customer_id'), ['customer_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('telegram_links', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_telegram_links_customer_id'))

    op.drop_table('telegram_links')
    op.drop_table('instance_keys')
