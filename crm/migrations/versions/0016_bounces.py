"""bounces: delivery status notifications about email touches

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 19:00:00.000000

Asynchronous bounces (RFC 3464 reports arriving at the per-touch VERP return address): one row per
(touch, action, status), so a report arriving twice is recorded once and soft bounces in a row
can be counted over an address's touches (``crm.ledger.bounces``).
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

import crm.models

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('bounces',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('touch_id', sa.Integer(), nullable=False),
    sa.Column('severity', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('at', crm.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['touch_id'], ['touches.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('touch_id', 'action', 'status', name='uq_bounces_touch_action_status')
    )


def downgrade() -> None:
    op.drop_table('bounces')
