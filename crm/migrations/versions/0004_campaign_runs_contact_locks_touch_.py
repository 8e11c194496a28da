"""campaign runs, contact locks, touch events, call tasks, persons

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 01:30:35.779066
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

import crm.models

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('campaign_runs',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('campaign', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('dry_run', sa.Boolean(), nullable=False),
    sa.Column('started_at', crm.models.UTCDateTime(), nullable=False),
    sa.Column('finished_at', crm.models.UTCDateTime(), nullable=True),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('summary', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('campaign_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_campaign_runs_campaign'), ['campaign'], unique=False)

    op.create_table('contact_locks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('person_id', sa.Integer(), nullable=False),
    sa.Column('scope', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('touch_id', sa.Integer(), nullable=True),
    sa.Column('expires_at', crm.models.UTCDateTime(), nullable=True),
    sa.Column('created_at', crm.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('person_id', 'scope', 'key', name='uq_contact_locks_person_scope_key')
    )
    with op.batch_alter_table('contact_locks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_contact_locks_person_id'), ['person_id'], unique=False)

    op.create_table('call_tasks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('touch_id', sa.Integer(), nullable=True),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('person_id', sa.Integer(), nullable=False),
    sa.Column('manager_id', sa.Integer(), nullable=True),
    sa.Column('campaign', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('offer', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('phone', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('script', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('due_on', sa.Date(), nullable=False),
    sa.Column('window_start', sqlmodel.sql.sqltypes.AutoString(length=5), nullable=True),
    sa.Column('window_end', sqlmodel.sql.sqltypes.AutoString(length=5), nullable=True),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('outcome', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('note', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
    sa.Column('created_at', crm.models.UTCDateTime(), nullable=False),
    sa.Column('closed_at', crm.models.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ),
    sa.ForeignKeyConstraint(['manager_id'], ['managers.id'], ),
    sa.ForeignKeyConstraint(['touch_id'], ['touches.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('call_tasks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_call_tasks_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index('ix_call_tasks_manager_status', ['manager_id', 'status'], unique=False)
        batch_op.create_index(batch_op.f('ix_call_tasks_person_id'), ['person_id'], unique=False)

    op.create_table('touch_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('touch_id', sa.Integer(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('at', crm.models.UTCDateTime(), nullable=False),
    sa.Column('detail', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
    sa.ForeignKeyConstraint(['touch_id'], ['touches.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('touch_events', schema=None) as batch_op:
        batch_op.create_index('ix_touch_events_touch', ['touch_id', 'at'], unique=False)

    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('person_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_customers_person_id'), ['person_id'], unique=False)
    op.execute("UPDATE customers SET person_id = id")  # each record its own person until `refresh_persons`

    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('due_at', crm.models.UTCDateTime(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.drop_column('due_at')

    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_customers_person_id'))
        batch_op.drop_column('person_id')

    with op.batch_alter_table('touch_events', schema=None) as batch_op:
        batch_op.drop_index('ix_touch_events_touch')

    op.drop_table('touch_events')
    with op.batch_alter_table('call_tasks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_call_tasks_person_id'))
        batch_op.drop_index('ix_call_tasks_manager_status')
        batch_op.drop_index(batch_op.f('ix_call_tasks_customer_id'))

    op.drop_table('call_tasks')
    with op.batch_alter_table('contact_locks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_contact_locks_person_id'))

    op.drop_table('contact_locks')
    with op.batch_alter_table('campaign_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_campaign_runs_campaign'))

    op.drop_table('campaign_runs')
