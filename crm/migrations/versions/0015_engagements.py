"""engagements: opens and clicks of email touches (the pixel and the tracked links)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 19:00:00.000000

Closing the loop: what a mail client did with a message, beside its touch. Not touch events: an
open or a click moves no status and is not evidence of what touchflow did, so it stays out of the
fold and out of the hash chain (``crm.ledger.engagement`` says why). The unique key on
(touch_id, kind, human, slot) collapses repeated opens; clicks have no slot, so every one is kept.
"""

from alembic import op
import sqlalchemy as sa

from crm.models import UTCDateTime


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'engagements',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('touch_id', sa.Integer(), sa.ForeignKey('touches.id'), nullable=False),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('at', UTCDateTime(), nullable=False),
        sa.Column('url', sa.String(length=2000), nullable=True),
        sa.Column('client', sa.String(length=16), nullable=False),
        sa.Column('human', sa.Boolean(), nullable=False),
        sa.Column('slot', sa.Integer(), nullable=True),
        sa.UniqueConstraint('touch_id', 'kind', 'human', 'slot', name='uq_engagements_touch_kind_slot'),
    )


def downgrade() -> None:
    op.drop_table('engagements')
