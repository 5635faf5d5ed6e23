"""index on cards.updated_at: the orchestrator reads only the cards written since its last pass

Revision ID: 0006
Revises: 0004
"""

from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_cards_updated", "cards", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_cards_updated", table_name="cards")
