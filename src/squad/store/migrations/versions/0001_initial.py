"""cards and runs

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cards",
        sa.Column("card_id", sa.String(64), primary_key=True),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("acceptance_criteria", sa.JSON, nullable=False),
        sa.Column("squad", sa.String(100)),
        sa.Column("agent", sa.String(100)),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("depends_on", sa.JSON, nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("workdir", sa.Text),
        sa.Column("time_limit", sa.Float),
        sa.Column("soft_time_limit", sa.Float),
        sa.Column("max_retries", sa.Integer),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("progress", sa.Integer, nullable=False),
        sa.Column("current_step", sa.Text),
        sa.Column("celery_task_id", sa.String(64)),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("queued_at", sa.Float),
        sa.Column("next_attempt_at", sa.Float),
        sa.Column("claim_token", sa.String(64)),
        sa.Column("claimed_by", sa.String(255)),
        sa.Column("lease_expires_at", sa.Float),
        sa.Column("session", sa.String(100)),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
    )
    op.create_index("ix_cards_status", "cards", ["status"])
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("card_id", sa.String(64), sa.ForeignKey("cards.card_id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("task_id", sa.String(64)),
        sa.Column("worker", sa.String(255)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("queued_at", sa.Float),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float),
        sa.Column("exit_code", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("cost_usd", sa.Float),
        sa.Column("session_id", sa.String(128)),
        sa.Column("num_turns", sa.Integer),
        sa.Column("input_tokens", sa.Integer),
        sa.Column("output_tokens", sa.Integer),
        sa.Column("log", sa.Text),
    )
    op.create_index("ix_runs_card", "runs", ["card_id"])
    op.create_index("ix_runs_ended", "runs", ["ended_at"])


def downgrade() -> None:
    op.drop_table("runs")
    op.drop_table("cards")
