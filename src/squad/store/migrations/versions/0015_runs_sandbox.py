"""runs.sandbox: which sandbox ran the attempt ("none", or "bwrap (network off, ...)")

Revision ID: 0015
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER (a nullable column, no default): SQLite adds it without rebuilding the table.
    op.add_column("runs", sa.Column("sandbox", sa.String(255)))


def downgrade() -> None:
    op.drop_column("runs", "sandbox")
