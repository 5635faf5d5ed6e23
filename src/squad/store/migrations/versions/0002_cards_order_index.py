"""index for the board order (priority desc, age)

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_cards_order", "cards", [sa.text("priority DESC"), "created_at", "card_id"])


def downgrade() -> None:
    op.drop_index("ix_cards_order", table_name="cards")
