"""console reads: touches by time (alone, per campaign, campaign and status, status); customers by name prefix

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-24 00:00:00.000000

Indexes only. The console's history search pages touches newest first with a keyset on
``(created_at, id)``; these let it read one page from an index whatever the filter, instead of
sorting every matching touch. ``ix_touches_campaign_created`` replaces ``ix_touches_campaign``
(the same leading column, so every lookup that used it still can). Customer lookup by the start
of a name uses ``ix_customers_name`` (``text_pattern_ops`` on PostgreSQL so that
``LIKE 'prefix%'`` can use it in any collation).
"""

from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.create_index('ix_touches_created', ['created_at', 'id'], unique=False)
        batch_op.create_index('ix_touches_campaign_created', ['campaign', 'created_at', 'id'], unique=False)
        batch_op.drop_index('ix_touches_campaign')
        batch_op.create_index('ix_touches_campaign_status_created', ['campaign', 'status', 'created_at', 'id'],
                              unique=False)
        batch_op.create_index('ix_touches_status_created', ['status', 'created_at', 'id'], unique=False)

    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.create_index('ix_customers_name', ['name'], unique=False,
                              postgresql_ops={'name': 'text_pattern_ops'})


def downgrade() -> None:
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_index('ix_customers_name')

    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.drop_index('ix_touches_status_created')
        batch_op.drop_index('ix_touches_campaign_status_created')
        batch_op.create_index('ix_touches_campaign', ['campaign'], unique=False)
        batch_op.drop_index('ix_touches_campaign_created')
        batch_op.drop_index('ix_touches_created')
