"""customer stats and predictions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 01:07:46.912357
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

import crm.models

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('customer_stats',
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('purchase_count', sa.Integer(), nullable=False),
    sa.Column('purchase_days', sa.Integer(), nullable=False),
    sa.Column('total_amount', sa.Float(), nullable=False),
    sa.Column('avg_check', sa.Float(), nullable=False),
    sa.Column('first_purchase_on', sa.Date(), nullable=True),
    sa.Column('last_purchase_on', sa.Date(), nullable=True),
    sa.Column('first_day', sa.Integer(), nullable=True),
    sa.Column('last_day', sa.Integer(), nullable=True),
    sa.Column('aipt_days', sa.Float(), nullable=True),
    sa.Column('rfm_r', sa.Integer(), nullable=True),
    sa.Column('rfm_f', sa.Integer(), nullable=True),
    sa.Column('rfm_m', sa.Integer(), nullable=True),
    sa.Column('rfm_group', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('refreshed_at', crm.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ),
    sa.PrimaryKeyConstraint('customer_id')
    )
    with op.batch_alter_table('customer_stats', schema=None) as batch_op:
        batch_op.create_index('ix_customer_stats_last_day', ['last_day'], unique=False)
        batch_op.create_index('ix_customer_stats_rfm_group', ['rfm_group'], unique=False)

    op.create_table('predictions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('basis', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('observations', sa.Integer(), nullable=False),
    sa.Column('last_on', sa.Date(), nullable=True),
    sa.Column('last_quantity', sa.Float(), nullable=True),
    sa.Column('avg_daily_use', sa.Float(), nullable=True),
    sa.Column('interval_days', sa.Float(), nullable=True),
    sa.Column('interval_source', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('due_on', sa.Date(), nullable=True),
    sa.Column('note', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('refreshed_at', crm.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('customer_id', 'basis', 'key', name='uq_predictions_customer_basis_key')
    )
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.create_index('ix_predictions_basis_key_due', ['basis', 'key', 'due_on'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_index('ix_predictions_basis_key_due')

    op.drop_table('predictions')
    with op.batch_alter_table('customer_stats', schema=None) as batch_op:
        batch_op.drop_index('ix_customer_stats_rfm_group')
        batch_op.drop_index('ix_customer_stats_last_day')

    op.drop_table('customer_stats')
