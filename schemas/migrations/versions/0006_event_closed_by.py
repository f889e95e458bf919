"""events say why they closed: their scores fell under the threshold, or their asset stopped sending

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 18:00:00

Events closed before this migration keep NULL (not known). Only `events` is rebuilt in SQLite's
batch mode; call_turns and its search triggers (0005) are untouched.
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('events') as batch:  # batch mode: SQLite cannot ALTER in place
        batch.add_column(sa.Column('closed_by', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('events') as batch:
        batch.drop_column('closed_by')
