"""touches.direction, touches.in_reply_to, touches.cost: the history in both directions, and what a touch cost

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 19:00:00.000000

Closing the loop: a customer's reply (an SMS, a Telegram message, an email) is a touch too,
``direction`` ``in``, linked to the touch it answers (``in_reply_to``). ``cost`` is the price of an
outgoing touch when it was claimed (the channel's price times SMS segments, or call minutes), so a
campaign's spend is a sum over its history and its budget can be kept. Touches written before
are outgoing, with no recorded cost.
"""

from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('direction', sa.String(length=3), nullable=False, server_default='out'))
        batch_op.add_column(sa.Column('in_reply_to', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('cost', sa.Numeric(precision=12, scale=4), nullable=True))
        batch_op.create_foreign_key('fk_touches_in_reply_to', 'touches', ['in_reply_to'], ['id'])
        batch_op.create_index('ix_touches_in_reply_to', ['in_reply_to'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.drop_index('ix_touches_in_reply_to')
        batch_op.drop_constraint('fk_touches_in_reply_to', type_='foreignkey')
        batch_op.drop_column('cost')
        batch_op.drop_column('in_reply_to')
        batch_op.drop_column('direction')
