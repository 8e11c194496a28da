"""reps: capacity, position, placeholder names; customers: gender, city; touches: offer_valid_until; reassignments

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 21:34:41.221410
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

import crm.models


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('reassignments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subject', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('subject_id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('from_manager_id', sa.Integer(), nullable=True),
    sa.Column('to_manager_id', sa.Integer(), nullable=True),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('at', crm.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ),
    sa.ForeignKeyConstraint(['from_manager_id'], ['managers.id'], ),
    sa.ForeignKeyConstraint(['to_manager_id'], ['managers.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('reassignments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reassignments_customer_id'), ['customer_id'], unique=False)

    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('city', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True))
        batch_op.add_column(sa.Column('gender', sqlmodel.sql.sqltypes.AutoString(length=1), nullable=True))

    with op.batch_alter_table('managers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('position', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
        batch_op.add_column(sa.Column('daily_call_capacity', sa.Integer(), nullable=False, server_default='40'))
        batch_op.add_column(sa.Column('needs_name', sa.Boolean(), nullable=False, server_default=sa.false()))

    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('offer_valid_until', sa.Date(), nullable=True))

    # Reps that customer imports created before this revision carry their code as their name
    # («Ваш менеджер: petrov»): flag them, so `touchflow managers list` asks for their names.
    managers = sa.table('managers', sa.column('code'), sa.column('name'), sa.column('needs_name', sa.Boolean()))
    op.execute(managers.update().where(managers.c.name == managers.c.code).values(needs_name=True))


def downgrade() -> None:
    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.drop_column('offer_valid_until')

    with op.batch_alter_table('managers', schema=None) as batch_op:
        batch_op.drop_column('needs_name')
        batch_op.drop_column('daily_call_capacity')
        batch_op.drop_column('position')

    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_column('gender')
        batch_op.drop_column('city')

    with op.batch_alter_table('reassignments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reassignments_customer_id'))

    op.drop_table('reassignments')
