"""console: users, API tokens, login attempts, sessions; the access log (chained)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24 10:00:00.000000
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

import crm.models


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def _text(length: int):
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', _text(64), nullable=False),
    sa.Column('role', _text(16), nullable=False),
    sa.Column('manager_id', sa.Integer(), nullable=True),
    sa.Column('password_hash', _text(200), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', crm.models.UTCDateTime(), nullable=False),
    sa.Column('password_changed_at', crm.models.UTCDateTime(), nullable=False),
    sa.Column('disabled_at', crm.models.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['manager_id'], ['managers.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_users_name'), ['name'], unique=True)

    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('label', _text(100), nullable=False),
    sa.Column('prefix', _text(16), nullable=False),
    sa.Column('token_hash', _text(64), nullable=False),
    sa.Column('created_at', crm.models.UTCDateTime(), nullable=False),
    sa.Column('last_used_at', crm.models.UTCDateTime(), nullable=True),
    sa.Column('revoked_at', crm.models.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_tokens_user_id'), ['user_id'], unique=False)

    op.create_table('login_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', _text(64), nullable=False),
    sa.Column('client', _text(64), nullable=False),
    sa.Column('at', crm.models.UTCDateTime(), nullable=False),
    sa.Column('outcome', _text(16), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('login_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_login_attempts_username_at', ['username', 'at'], unique=False)
        batch_op.create_index('ix_login_attempts_client_at', ['client', 'at'], unique=False)

    op.create_table('user_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', _text(64), nullable=False),
    sa.Column('csrf_token', _text(64), nullable=False),
    sa.Column('client', _text(64), nullable=False),
    sa.Column('created_at', crm.models.UTCDateTime(), nullable=False),
    sa.Column('last_seen_at', crm.models.UTCDateTime(), nullable=False),
    sa.Column('expires_at', crm.models.UTCDateTime(), nullable=False),
    sa.Column('ended_at', crm.models.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    with op.batch_alter_table('user_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_sessions_user_id'), ['user_id'], unique=False)

    op.create_table('access_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', crm.models.UTCDateTime(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('username', _text(64), nullable=False),
    sa.Column('role', _text(16), nullable=False),
    sa.Column('action', _text(32), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=True),
    sa.Column('person_id', sa.Integer(), nullable=True),
    sa.Column('client', _text(64), nullable=False),
    sa.Column('method', _text(8), nullable=False),
    sa.Column('route', _text(200), nullable=False),
    sa.Column('detail', _text(500), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('access_log', schema=None) as batch_op:
        batch_op.create_index('ix_access_log_customer', ['customer_id'], unique=False)
        batch_op.create_index('ix_access_log_user', ['user_id'], unique=False)


def downgrade() -> None:
    op.drop_table('access_log')
    op.drop_table('user_sessions')
    op.drop_table('login_attempts')
    op.drop_table('api_tokens')
    op.drop_table('users')
