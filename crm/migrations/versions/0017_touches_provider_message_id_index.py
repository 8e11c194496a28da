"""touches by provider message id: a reply's In-Reply-To and a provider's callback find their touch by index

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 19:30:00.000000

Index only. An email reply names the Message-ID it answers (In-Reply-To, References), which is
the answered touch's ``provider_message_id``; Twilio's status callbacks name the MessageSid the
same way. Without an index each of them read the whole history.
"""

from alembic import op


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.create_index('ix_touches_provider_message_id', ['provider_message_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.drop_index('ix_touches_provider_message_id')
