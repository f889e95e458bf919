"""alert delivery: the notifier's ledger, dead letters and per-event severity

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 10:00:00
"""
import sqlalchemy as sa
from alembic import op

import schemas.tables

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('notify_deliveries',
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=64), nullable=False),
    sa.Column('transition', sa.String(length=16), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('finished_at', schemas.tables.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id', 'revision', 'channel')
    )
    with op.batch_alter_table('notify_deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notify_deliveries_finished_at'), ['finished_at'], unique=False)
    op.create_table('notify_dead_letters',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=64), nullable=False),
    sa.Column('transition', sa.String(length=16), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('first_attempt_at', schemas.tables.UtcDateTime(timezone=True), nullable=False),
    sa.Column('last_attempt_at', schemas.tables.UtcDateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=False),
    sa.Column('created_at', schemas.tables.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('notify_dead_letters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notify_dead_letters_event_id'), ['event_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_notify_dead_letters_created_at'), ['created_at'], unique=False)
    op.create_table('notify_event_state',
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('asset_id', sa.String(length=64), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('updated_at', schemas.tables.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id')
    )
    with op.batch_alter_table('notify_event_state', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notify_event_state_updated_at'), ['updated_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('notify_event_state', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notify_event_state_updated_at'))
    op.drop_table('notify_event_state')
    with op.batch_alter_table('notify_dead_letters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notify_dead_letters_created_at'))
        batch_op.drop_index(batch_op.f('ix_notify_dead_letters_event_id'))
    op.drop_table('notify_dead_letters')
    with op.batch_alter_table('notify_deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notify_deliveries_finished_at'))
    op.drop_table('notify_deliveries')
