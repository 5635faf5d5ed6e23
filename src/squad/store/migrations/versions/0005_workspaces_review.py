"""workspaces and review: per-card repo/base/review, rejection feedback, git facts of each run

Revision ID: 0005
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0010"
branch_labels = None
depends_on = None

_CARD_COLUMNS = ("repo", "base", "review", "feedback")
_RUN_COLUMNS = ("branch", "base_commit", "head_commit", "files_changed", "insertions", "deletions", "patch")


def upgrade() -> None:
    with op.batch_alter_table("cards") as batch:
        batch.add_column(sa.Column("repo", sa.Text))
        batch.add_column(sa.Column("base", sa.String(255)))
        batch.add_column(sa.Column("review", sa.Boolean))
        batch.add_column(sa.Column("feedback", sa.Text))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("branch", sa.String(255)))
        batch.add_column(sa.Column("base_commit", sa.String(64)))
        batch.add_column(sa.Column("head_commit", sa.String(64)))
        batch.add_column(sa.Column("files_changed", sa.Integer))
        batch.add_column(sa.Column("insertions", sa.Integer))
        batch.add_column(sa.Column("deletions", sa.Integer))
        batch.add_column(sa.Column("patch", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for name in _RUN_COLUMNS:
            batch.drop_column(name)
    with op.batch_alter_table("cards") as batch:
        for name in _CARD_COLUMNS:
            batch.drop_column(name)
