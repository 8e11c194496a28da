"""call task documents

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 01:55:47.476933
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('call_tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('document_path', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('call_tasks', schema=None) as batch_op:
        batch_op.drop_column('document_path')

