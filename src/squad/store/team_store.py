"""The team tables of the store (docs/team.md): tokens, the audit log, the notification outbox,
schedule ticks and GitHub deliveries.

Kept apart from `card_store.py` (cards and runs); it shares the card store's engine and its short
write transactions. Every "exactly once" here is a primary key or a compare-and-set UPDATE, so any
number of processes (API servers, workers run by two beats) may race.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from squad.core.errors import ConflictError
from squad.store.card_store import CardStore, now_s
from squad.store.tables import api_tokens, audit, intake_deliveries, notify_outbox, schedule_ticks

#: A token's `last_used_at` is written at most this often (not one write per request).
TOKEN_TOUCH_EVERY_S = 60.0
AUDIT_MAX_PAGE = 1000


@dataclass(frozen=True)
class TokenRow:
    """One named token as stored (the digest of its secret, never the secret)."""

    token_id: str
    name: str
    role: str
    salt: str
    digest: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None


@dataclass(frozen=True)
class Outgoing:
    """A notification the outbox holds."""

    id: int
    target: str
    event: str
    card_id: str | None
    body: str
    created_at: float
    attempts: int


class TeamStore:
    """Queries over the team tables, on the card store's engine."""

    def __init__(self, store: CardStore) -> None:
        self.store = store
        self.engine = store.engine

    # ---- tokens --------------------------------------------------------------------------------
    def add_token(self, row: TokenRow) -> None:
        """Store a new token; ConflictError when an unrevoked token already has this name (a revoked
        one of that name is replaced: its audit rows keep the name)."""
        with self.store.tx() as conn:
            live = conn.execute(select(api_tokens.c.token_id).where(api_tokens.c.name == row.name)
                                .where(api_tokens.c.revoked_at.is_(None))).first()
            if live is not None:
                raise ConflictError(f"a token named {row.name!r} exists (revoke it first)")
            conn.execute(delete(api_tokens).where(api_tokens.c.name == row.name))
            conn.execute(insert(api_tokens).values(**row.__dict__))

    def token(self, token_id: str) -> TokenRow | None:
        """The token with this public id (revoked ones too), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(api_tokens).where(api_tokens.c.token_id == token_id)).first()
        return None if row is None else TokenRow(**row._mapping)

    def touch_token(self, token_id: str, now: float) -> None:
        """Note a use of the token (at most once a minute)."""
        with self.store.tx() as conn:
            conn.execute(update(api_tokens).where(api_tokens.c.token_id == token_id).where(
                (api_tokens.c.last_used_at.is_(None)) | (api_tokens.c.last_used_at < now - TOKEN_TOUCH_EVERY_S))
                .values(last_used_at=now))

    def tokens(self) -> list[TokenRow]:
        """Every token, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(api_tokens).order_by(api_tokens.c.created_at)).all()
        return [TokenRow(**r._mapping) for r in rows]

    def revoke_token(self, name: str) -> bool:
        """Revoke the live token of this name; False when there is none."""
        with self.store.tx() as conn:
            done = conn.execute(update(api_tokens).where(api_tokens.c.name == name)
                                .where(api_tokens.c.revoked_at.is_(None)).values(revoked_at=now_s()))
        return bool(done.rowcount)

    def has_tokens(self) -> bool:
        """True once any token was created, revoked ones too: then the API needs a token (revoking
        the last one must not open the server to everyone)."""
        with self.engine.connect() as conn:
            return conn.execute(select(api_tokens.c.token_id).limit(1)).first() is not None

    # ---- audit ---------------------------------------------------------------------------------
    def append_audit(self, *, who: str, action: str, card_id: str | None, client: str | None, result: str,
                     detail: str | None = None, at: float | None = None) -> None:
        """Append one audit row (nothing ever updates or deletes one)."""
        with self.store.tx() as conn:
            conn.execute(insert(audit).values(at=at or now_s(), who=who[:200], action=action[:100],
                                              card_id=card_id[:64] if card_id else None,
                                              client=client[:200] if client else None, result=result[:200],
                                              detail=detail))

    def audit_rows(self, *, card_id: str | None = None, since: float | None = None, limit: int = 100,
                   offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """A page of audit rows, newest first, and how many match."""
        conds = []
        if card_id:
            conds.append(audit.c.card_id == card_id)
        if since is not None:
            conds.append(audit.c.at >= since)
        query = select(audit).where(*conds).order_by(audit.c.at.desc(), audit.c.id.desc())
        with self.engine.connect() as conn:
            rows = conn.execute(query.limit(min(limit, AUDIT_MAX_PAGE)).offset(offset)).all()
            total = int(conn.execute(select(func.count()).select_from(audit).where(*conds)).scalar_one())
        return [dict(r._mapping) for r in rows], total

    # ---- schedules and intake: a primary key decides who goes first ------------------------------
    def claim_tick(self, schedule: str, tick: str, card_id: str | None) -> bool:
        """True for the one caller that records this schedule's tick first."""
        try:
            with self.store.tx() as conn:
                conn.execute(insert(schedule_ticks).values(schedule=schedule, tick=tick, card_id=card_id,
                                                           created_at=now_s()))
        except IntegrityError:
            return False
        return True

    def last_tick(self, schedule: str) -> str | None:
        """The newest tick recorded for a schedule (ticks are `YYYY-MM-DDTHH:MM`, so they sort)."""
        with self.engine.connect() as conn:
            value = conn.execute(select(func.max(schedule_ticks.c.tick))
                                 .where(schedule_ticks.c.schedule == schedule)).scalar()
        return None if value is None else str(value)

    def first_delivery(self, delivery_id: str, event: str) -> bool:
        """True the first time a GitHub delivery id is seen; a replay answers False."""
        try:
            with self.store.tx() as conn:
                conn.execute(insert(intake_deliveries).values(delivery_id=delivery_id[:100], event=event[:64],
                                                              received_at=now_s()))
        except IntegrityError:
            return False
        return True

    # ---- the notification outbox -----------------------------------------------------------------
    def enqueue_notification(self, *, target: str, event_key: str, event: str, card_id: str | None, body: str,
                             now: float | None = None) -> bool:
        """Put a notification in the outbox once (`target` + `event_key` is unique)."""
        at = now or now_s()
        try:
            with self.store.tx() as conn:
                conn.execute(insert(notify_outbox).values(target=target, event_key=event_key[:200], event=event,
                                                          card_id=card_id, body=body, created_at=at, next_at=at,
                                                          attempts=0, state="pending"))
        except IntegrityError:
            return False
        return True

    def claim_due(self, now: float, *, limit: int, hold_s: float) -> list[Outgoing]:
        """Take up to `limit` due notifications for `hold_s` seconds (compare-and-set: two workers
        never send the same one at once)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(notify_outbox).where(notify_outbox.c.state == "pending")
                                .where(notify_outbox.c.next_at <= now)
                                .where((notify_outbox.c.claimed_until.is_(None))
                                       | (notify_outbox.c.claimed_until < now))
                                .order_by(notify_outbox.c.next_at).limit(limit)).all()
        taken: list[Outgoing] = []
        for row in rows:
            with self.store.tx() as conn:
                done = conn.execute(update(notify_outbox).where(notify_outbox.c.id == row.id)
                                    .where(notify_outbox.c.state == "pending")
                                    .where((notify_outbox.c.claimed_until.is_(None))
                                           | (notify_outbox.c.claimed_until < now))
                                    .values(claimed_until=now + hold_s))
            if done.rowcount:
                taken.append(Outgoing(id=row.id, target=row.target, event=row.event, card_id=row.card_id,
                                      body=row.body, created_at=row.created_at, attempts=row.attempts))
        return taken

    def settle_notification(self, outgoing_id: int, *, state: str, next_at: float | None = None,
                            error: str | None = None) -> None:
        """Record a delivery's outcome: `sent`, `pending` again at `next_at`, or `dropped`."""
        values: dict[str, Any] = {"state": state, "claimed_until": None, "last_error": error,
                                  "attempts": notify_outbox.c.attempts + 1}
        if next_at is not None:
            values["next_at"] = next_at
        with self.store.tx() as conn:
            conn.execute(update(notify_outbox).where(notify_outbox.c.id == outgoing_id).values(**values))

    def outbox_counts(self) -> dict[str, int]:
        """Notifications by state (`pending`, `sent`, `dropped`) and `failing` (pending after a failure)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(notify_outbox.c.state, func.count()).group_by(notify_outbox.c.state)).all()
            failing = conn.execute(select(func.count()).select_from(notify_outbox)
                                   .where(notify_outbox.c.state == "pending")
                                   .where(notify_outbox.c.attempts > 0)).scalar_one()
        counts = {"pending": 0, "sent": 0, "dropped": 0}
        counts.update({str(state): int(n) for state, n in rows})
        counts["failing"] = int(failing)
        return counts

    def last_failures(self, limit: int = 5) -> list[dict[str, Any]]:
        """The latest failed deliveries (still retrying or dropped), newest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(notify_outbox.c.target, notify_outbox.c.event, notify_outbox.c.card_id,
                                       notify_outbox.c.state, notify_outbox.c.attempts, notify_outbox.c.last_error)
                                .where(notify_outbox.c.last_error.is_not(None))
                                .where(notify_outbox.c.state != "sent")
                                .order_by(notify_outbox.c.id.desc()).limit(limit)).all()
        return [dict(r._mapping) for r in rows]
