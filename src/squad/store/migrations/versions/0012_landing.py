"""Landing the work (docs/workspaces.md "Landing the work"): the verify gate, the merge train.

cards.verify, cards.land, cards.land_when: a card's own verify argv and landing mode; cards.conflicts:
the files a landing left conflicted for the next attempt; cards.landing_at: when the card joined its
repository's train (the train's order). runs.verify_exit, runs.verify_output (its tail),
runs.landed_commit. land_trains: one row per repository and base held by the card landing now, with
a lease, so a lander that died does not block its train.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTERs (nullable columns, no default): SQLite adds them without rebuilding the table.
    op.add_column("cards", sa.Column("verify", sa.JSON))
    op.add_column("cards", sa.Column("land", sa.String(16)))
    op.add_column("cards", sa.Column("land_when", sa.String(16)))
    op.add_column("cards", sa.Column("conflicts", sa.JSON))
    op.add_column("cards", sa.Column("landing_at", sa.Float))
    op.add_column("runs", sa.Column("verify_exit", sa.Integer))
    op.add_column("runs", sa.Column("verify_output", sa.Text))
    op.add_column("runs", sa.Column("landed_commit", sa.String(64)))
    op.create_table(
        "land_trains",
        sa.Column("train", sa.String(512), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("card_id", sa.String(64), nullable=False),
        sa.Column("lease_expires_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("land_trains")
    for column in ("landed_commit", "verify_output", "verify_exit"):
        op.drop_column("runs", column)
    for column in ("landing_at", "conflicts", "land_when", "land", "verify"):
        op.drop_column("cards", column)
