"""SQL schema of the card store (SQLAlchemy Core). Alembic migrations create exactly this."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from squad.store.head import SCHEMA_HEAD as SCHEMA_HEAD  # the newest revision in migrations/versions

metadata = MetaData()

cards = Table(
    "cards",
    metadata,
    Column("card_id", String(64), primary_key=True),
    Column("title", String(500), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("acceptance_criteria", JSON, nullable=False),
    Column("squad", String(100)),
    Column("agent", String(100)),
    Column("priority", Integer, nullable=False, default=5),
    Column("depends_on", JSON, nullable=False),
    Column("labels", JSON, nullable=False),
    Column("workdir", Text),
    Column("time_limit", Float),
    Column("soft_time_limit", Float),
    Column("max_retries", Integer),
    Column("status", String(16), nullable=False, default="TODO"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("progress", Integer, nullable=False, default=0),
    Column("current_step", Text),
    Column("celery_task_id", String(64)),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # execution state (not part of the public card shape)
    Column("queued_at", Float),
    Column("next_attempt_at", Float),
    Column("claim_token", String(64)),
    Column("claimed_by", String(255)),
    Column("lease_expires_at", Float),
    Column("session", String(100)),
    Column("cost_usd", Float, nullable=False, default=0.0),
    # attempts already made when the user last retried by hand: retries left = max - (attempts - base)
    Column("retry_base", Integer, nullable=False, default=0, server_default="0"),
    # workspace overrides and the latest rejection's feedback (docs/workspaces.md)
    Column("repo", Text),
    Column("base", String(255)),
    Column("review", Boolean),
    Column("feedback", Text),
    # landing the work (revision 0012): the card's own verify and landing mode, the files a landing
    # left conflicted for its next attempt, when it joined its repository's train
    Column("verify", JSON),
    Column("land", String(16)),
    Column("land_when", String(16)),
    Column("conflicts", JSON),
    Column("landing_at", Float),
    # sub-cards and questions to a person (migration 0013, docs/agents.md)
    Column("parent", String(64)),
    Column("question", Text),
    Column("choices", JSON),
    Column("answer", Text),
    Column("asked_at", Float),
    Index("ix_cards_status", "status"),
    Index("ix_cards_parent", "parent"),
    Index("ix_cards_updated", "updated_at"),
)
Index("ix_cards_order", cards.c.priority.desc(), cards.c.created_at, cards.c.card_id)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("card_id", String(64), ForeignKey("cards.card_id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("task_id", String(64)),
    Column("worker", String(255)),
    Column("status", String(16), nullable=False, default="running"),
    Column("queued_at", Float),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float),
    Column("exit_code", Integer),
    Column("error", Text),
    Column("cost_usd", Float),
    Column("session_id", String(128)),
    Column("num_turns", Integer),
    Column("input_tokens", Integer),
    Column("output_tokens", Integer),
    # of input_tokens, those read from and written to the prompt cache (revision 0011)
    Column("cache_read_tokens", Integer),
    Column("cache_creation_tokens", Integer),
    Column("log", Text),
    # git facts of an attempt in a workspace, and uncommitted work saved before a removal
    Column("branch", String(255)),
    Column("base_commit", String(64)),
    Column("head_commit", String(64)),
    Column("files_changed", Integer),
    Column("insertions", Integer),
    Column("deletions", Integer),
    Column("patch", Text),
    # the verify gate's exit code and output tail, the commit a landing put on base (revision 0012)
    Column("verify_exit", Integer),
    Column("verify_output", Text),
    Column("landed_commit", String(64)),
    # which sandbox ran the attempt, e.g. "bwrap (network off)" or "none" (revision 0015)
    Column("sandbox", String(255)),
    Index("ix_runs_card", "card_id"),
    Index("ix_runs_ended", "ended_at"),
)

#: One row: this store's id, created by its first migration. It namespaces the store's Redis keys,
#: so two stores sharing one Redis never see each other's events and logs.
instance = Table(
    "instance",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("instance_id", String(32), nullable=False),
)

#: One row per merge train (repository and base) while a card lands on it: who holds it, until when.
#: A lander that died stops renewing its lease; the next lander takes the train over after it.
land_trains = Table(
    "land_trains",
    metadata,
    Column("train", String(512), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("card_id", String(64), nullable=False),
    Column("lease_expires_at", Float, nullable=False),
)

# ---- team use (revision 0014, docs/team.md) ---------------------------------------------------
#: Named API tokens with a role; only a salted SHA-256 digest of the secret is kept.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_id", String(32), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("role", String(16), nullable=False),
    Column("salt", String(64), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float),
    Column("revoked_at", Float),
    Index("ix_api_tokens_name", "name"),
)

#: Every write through the API or the CLI: append-only (nothing updates or deletes a row).
audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("who", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("card_id", String(64)),
    Column("client", String(200)),
    Column("result", String(200), nullable=False),
    Column("detail", Text),
    Index("ix_audit_at", "at"),
    Index("ix_audit_card", "card_id"),
)

#: Notifications waiting to be delivered (or sent, or dropped after a day of failures).
notify_outbox = Table(
    "notify_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("target", String(100), nullable=False),
    Column("event_key", String(200), nullable=False),
    Column("event", String(32), nullable=False),
    Column("card_id", String(64)),
    Column("body", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("next_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("state", String(16), nullable=False, default="pending", server_default="pending"),
    Column("claimed_until", Float),
    Column("last_error", Text),
    UniqueConstraint("target", "event_key", name="uq_notify_outbox_event"),
    Index("ix_notify_outbox_due", "state", "next_at"),
)

#: One row per schedule and tick: its primary key makes several beats add one card per tick.
schedule_ticks = Table(
    "schedule_ticks",
    metadata,
    Column("schedule", String(100), primary_key=True),
    Column("tick", String(20), primary_key=True),
    Column("card_id", String(64)),
    Column("created_at", Float, nullable=False),
)

#: GitHub webhook deliveries already taken (`X-GitHub-Delivery`): a replay is ignored.
intake_deliveries = Table(
    "intake_deliveries",
    metadata,
    Column("delivery_id", String(100), primary_key=True),
    Column("event", String(64), nullable=False),
    Column("received_at", Float, nullable=False),
)
