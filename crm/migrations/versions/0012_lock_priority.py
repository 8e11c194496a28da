"""contact_locks.priority: the holding campaign's priority, so that a refusal says outranked or only a gap

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-24 07:00:00.000000

The communication plan's arbitration: when a person's gap lock (no two marketing touches within
the minimum gap) or offer-group lock is held, the refusal names the holder, and whether it won by
priority (``outranked``) or only came first (``min_gap``). Locks written before have no priority.
"""

from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('contact_locks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('contact_locks', schema=None) as batch_op:
        batch_op.drop_column('priority')
