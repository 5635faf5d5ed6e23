"""cards.parent, question, choices, answer and asked_at: sub-cards and questions to a person (docs/agents.md)

`parent` is the card whose attempt created a card through `create_cards` (indexed: a parent's
children are looked up when it or one of them settles); `question` and `choices` are what its
agent asked with `ask_human` while the card is NEEDS_INPUT; `answer` is the person's reply until
the waiting attempt takes it; `asked_at` when the question was asked.

Revision ID: 0013
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER (nullable columns, no default): SQLite adds them without rebuilding the table.
    op.add_column("cards", sa.Column("parent", sa.String(64)))
    op.add_column("cards", sa.Column("question", sa.Text))
    op.add_column("cards", sa.Column("choices", sa.JSON))
    op.add_column("cards", sa.Column("answer", sa.Text))
    op.add_column("cards", sa.Column("asked_at", sa.Float))
    op.create_index("ix_cards_parent", "cards", ["parent"])


def downgrade() -> None:
    op.drop_index("ix_cards_parent", table_name="cards")
    for column in ("asked_at", "answer", "choices", "question", "parent"):
        op.drop_column("cards", column)
