"""runs.cache_read_tokens and runs.cache_creation_tokens: the prompt-cache split of input_tokens

input_tokens now counts every prompt token the model read (Claude's cached ones were left out);
these two keep how many of them came from the prompt cache and how many were written to it.

Revision ID: 0011
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER (nullable columns, no default): SQLite adds them without rebuilding the table.
    op.add_column("runs", sa.Column("cache_read_tokens", sa.Integer))
    op.add_column("runs", sa.Column("cache_creation_tokens", sa.Integer))


def downgrade() -> None:
    op.drop_column("runs", "cache_creation_tokens")
    op.drop_column("runs", "cache_read_tokens")
