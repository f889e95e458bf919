"""operators mark an asset's new normal: baseline resets; events opened while a baseline was learned

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 03:55:00
"""
import sqlalchemy as sa
from alembic import op

import schemas.tables

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('baseline_resets',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('asset_id', sa.String(length=64), nullable=False),
    sa.Column('requested_at', schemas.tables.UtcDateTime(timezone=True), nullable=False),
    sa.Column('requested_by', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('applied_at', schemas.tables.UtcDateTime(timezone=True), nullable=True),
    sa.Column('applied_by', sa.String(length=128), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('baseline_resets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_baseline_resets_asset_id'), ['asset_id'], unique=False)
    with op.batch_alter_table('events') as batch:  # batch mode: SQLite cannot ALTER in place
        batch.add_column(sa.Column('learning', sa.Boolean(), nullable=False, server_default=sa.text('false')))


def downgrade() -> None:
    with op.batch_alter_table('events') as batch:
        batch.drop_column('learning')
    with op.batch_alter_table('baseline_resets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_baseline_resets_asset_id'))
    op.drop_table('baseline_resets')
