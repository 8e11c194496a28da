"""journey_states: each person's place in a journey (step, due time, why they left), leased by one runner

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-24 08:00:00.000000
"""

from alembic import op
import sqlalchemy as sa

from crm.models import UTCDateTime


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'journey_states',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('journey', sa.String(length=200), nullable=False),
        sa.Column('person_id', sa.Integer(), nullable=False),
        sa.Column('customer_id', sa.Integer(), sa.ForeignKey('customers.id'), nullable=False),
        sa.Column('step', sa.String(length=60), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('due_at', UTCDateTime(), nullable=True),
        sa.Column('entered_at', UTCDateTime(), nullable=False),
        sa.Column('step_at', UTCDateTime(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('last_touch_id', sa.Integer(), nullable=True),
        sa.Column('left_reason', sa.String(length=64), nullable=True),
        sa.Column('lease_owner', sa.String(length=64), nullable=True),
        sa.Column('lease_until', UTCDateTime(), nullable=True),
        sa.Column('updated_at', UTCDateTime(), nullable=False),
        sa.UniqueConstraint('journey', 'person_id', name='uq_journey_states_journey_person'),
    )
    op.create_index('ix_journey_states_due', 'journey_states', ['journey', 'status', 'due_at'])


def downgrade() -> None:
    op.drop_index('ix_journey_states_due', table_name='journey_states')
    op.drop_table('journey_states')
