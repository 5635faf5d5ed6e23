"""team use: api_tokens (roles), audit (append-only), notify_outbox, schedule_ticks, intake_deliveries

docs/team.md: named tokens with a role (stored as a salted SHA-256 digest, never the token), the
audit log of every write, the notifications waiting to be delivered, the one row per schedule tick
(its primary key is what makes two beats add one card per tick) and the GitHub deliveries seen.

Revision ID: 0014
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("token_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_used_at", sa.Float),
        sa.Column("revoked_at", sa.Float),
    )
    op.create_index("ix_api_tokens_name", "api_tokens", ["name"])
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("who", sa.String(200), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("card_id", sa.String(64)),
        sa.Column("client", sa.String(200)),
        sa.Column("result", sa.String(200), nullable=False),
        sa.Column("detail", sa.Text),
    )
    op.create_index("ix_audit_at", "audit", ["at"])
    op.create_index("ix_audit_card", "audit", ["card_id"])
    op.create_table(
        "notify_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("target", sa.String(100), nullable=False),
        sa.Column("event_key", sa.String(200), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("card_id", sa.String(64)),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("next_at", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("state", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("claimed_until", sa.Float),
        sa.Column("last_error", sa.Text),
        sa.UniqueConstraint("target", "event_key", name="uq_notify_outbox_event"),
    )
    op.create_index("ix_notify_outbox_due", "notify_outbox", ["state", "next_at"])
    op.create_table(
        "schedule_ticks",
        sa.Column("schedule", sa.String(100), primary_key=True),
        sa.Column("tick", sa.String(20), primary_key=True),
        sa.Column("card_id", sa.String(64)),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "intake_deliveries",
        sa.Column("delivery_id", sa.String(100), primary_key=True),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("intake_deliveries")
    op.drop_table("schedule_ticks")
    op.drop_index("ix_notify_outbox_due", "notify_outbox")
    op.drop_table("notify_outbox")
    op.drop_index("ix_audit_card", "audit")
    op.drop_index("ix_audit_at", "audit")
    op.drop_table("audit")
    op.drop_index("ix_api_tokens_name", "api_tokens")
    op.drop_table("api_tokens")
