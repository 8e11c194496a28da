"""ledger: run leases, full touch events, keyed seals, erasures, import failures

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 19:16:51.014462
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

import crm.models


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('erasures',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('at', crm.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('erasures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_erasures_customer_id'), ['customer_id'], unique=False)

    with op.batch_alter_table('campaign_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_until', crm.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))

    with op.batch_alter_table('chain_seals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version', sa.Integer(), nullable=False, server_default='1'))
        batch_op.add_column(sa.Column('seq', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('mac', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))

    with op.batch_alter_table('import_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False,
                                      server_default='finished'))
        batch_op.add_column(sa.Column('error', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True))

    with op.batch_alter_table('touch_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.add_column(sa.Column('error_code', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.add_column(sa.Column('error_message', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True))
        batch_op.add_column(sa.Column('provider_message_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
        batch_op.drop_index(batch_op.f('ix_touch_events_touch'))
        batch_op.create_index('ix_touch_events_touch_id', ['touch_id', 'id'], unique=False)

    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('address_digest', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.create_index('ix_touches_run_status', ['run_id', 'status'], unique=False)

    # Touches written before this revision have events without the fields a move sets (reason,
    # error, provider id): `compliance verify` checks their state against the events only after this id.
    op.execute("INSERT INTO instance_keys (name, value, created_at) "
               "SELECT 'history_v2_after_touch', CAST(COALESCE(MAX(id), 0) AS VARCHAR(20)), CURRENT_TIMESTAMP "
               "FROM touches")



def downgrade() -> None:
    op.execute("DELETE FROM instance_keys WHERE name = 'history_v2_after_touch'")
    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.drop_index('ix_touches_run_status')
        batch_op.drop_column('address_digest')

    with op.batch_alter_table('touch_events', schema=None) as batch_op:
        batch_op.drop_index('ix_touch_events_touch_id')
        batch_op.create_index(batch_op.f('ix_touch_events_touch'), ['touch_id', 'at'], unique=False)
        batch_op.drop_column('provider_message_id')
        batch_op.drop_column('error_message')
        batch_op.drop_column('error_code')
        batch_op.drop_column('reason')

    with op.batch_alter_table('import_runs', schema=None) as batch_op:
        batch_op.drop_column('error')
        batch_op.drop_column('status')

    with op.batch_alter_table('chain_seals', schema=None) as batch_op:
        batch_op.drop_column('mac')
        batch_op.drop_column('seq')
        batch_op.drop_column('version')

    with op.batch_alter_table('campaign_runs', schema=None) as batch_op:
        batch_op.drop_column('owner')
        batch_op.drop_column('lease_until')

    with op.batch_alter_table('erasures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_erasures_customer_id'))

    op.drop_table('erasures')
