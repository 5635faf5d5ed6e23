"""drop cards.seq: a per-card counter that was written on every status change and never read

Revision ID: 0010
Revises: 0003
"""

from alembic import op

revision = "0010"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER (SQLite >= 3.35 and PostgreSQL): a batch copy would rebuild the cards table.
    op.drop_column("cards", "seq")


def downgrade() -> None:
    import sqlalchemy as sa

    op.add_column("cards", sa.Column("seq", sa.Integer, nullable=False, server_default="0"))
