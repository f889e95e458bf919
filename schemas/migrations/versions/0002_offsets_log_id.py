"""consumer offsets remember which log they count records of

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 12:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('consumer_offsets') as batch:  # batch mode: SQLite cannot ALTER in place
        batch.add_column(sa.Column('log_id', sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('consumer_offsets') as batch:
        batch.drop_column('log_id')
