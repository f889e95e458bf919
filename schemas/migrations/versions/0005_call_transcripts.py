"""call transcripts: each line of a call the monitor heard, its customer sentiment, and full-text search

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 11:00:00

Search is per database: SQLite gets an FTS5 table over call_turns.text (external content, kept
by triggers; Porter stemming), PostgreSQL a generated tsvector column (English configuration) with
a GIN index. A later migration that rebuilds call_turns in SQLite batch mode must create the
triggers again.
"""
import sqlalchemy as sa
from alembic import op

import schemas.tables

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

SQLITE_SEARCH = [
    "CREATE VIRTUAL TABLE call_turns_fts USING fts5(text, content='call_turns', content_rowid='id', "
    "tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER call_turns_fts_insert AFTER INSERT ON call_turns BEGIN "
    "INSERT INTO call_turns_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER call_turns_fts_delete AFTER DELETE ON call_turns BEGIN "
    "INSERT INTO call_turns_fts(call_turns_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER call_turns_fts_update AFTER UPDATE OF text ON call_turns BEGIN "
    "INSERT INTO call_turns_fts(call_turns_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO call_turns_fts(rowid, text) VALUES (new.id, new.text); END",
]
POSTGRES_SEARCH = [
    "ALTER TABLE call_turns ADD COLUMN tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED",
    "CREATE INDEX ix_call_turns_tsv ON call_turns USING gin (tsv)",
]


def upgrade() -> None:
    op.create_table('call_turns',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('call_id', sa.String(length=64), nullable=False),
    sa.Column('at', schemas.tables.UtcDateTime(timezone=True), nullable=False),
    sa.Column('speaker', sa.String(length=128), nullable=True),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('windows', sa.Integer(), nullable=False),
    sa.Column('negative', sa.Float(), nullable=False),
    sa.Column('neutral', sa.Float(), nullable=False),
    sa.Column('positive', sa.Float(), nullable=False),
    sa.Column('frustration', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('call_turns', schema=None) as batch_op:
        batch_op.create_index('ix_call_turns_call_at', ['call_id', 'at'], unique=False)
    dialect = op.get_bind().dialect.name
    for statement in SQLITE_SEARCH if dialect == 'sqlite' else POSTGRES_SEARCH if dialect == 'postgresql' else []:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        op.execute("DROP TRIGGER IF EXISTS call_turns_fts_update")
        op.execute("DROP TRIGGER IF EXISTS call_turns_fts_delete")
        op.execute("DROP TRIGGER IF EXISTS call_turns_fts_insert")
        op.execute("DROP TABLE IF EXISTS call_turns_fts")
    with op.batch_alter_table('call_turns', schema=None) as batch_op:
        batch_op.drop_index('ix_call_turns_call_at')
    op.drop_table('call_turns')
