"""Reads the dashboard needs beyond single cards: run history pages, card extras, leases per worker.

Each function is one or two SQL queries whatever the data size (the dashboard polls them), and
runs in a worker thread (blocking).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Select, func, or_, select

from squad.api.schemas import HistoryRun, built
from squad.core.cards import Card
from squad.core.statuses import Status
from squad.store.card_store import LANDED_COMMIT, CardStore, card_page_query, to_dt
from squad.store.tables import cards as cards_t
from squad.store.tables import runs as runs_t

_RUN_COLUMNS = [c for c in runs_t.c if c.name != "log"]


_CARD_FIELDS = tuple(Card.model_fields)


class CardExtras(NamedTuple):
    """Execution state the dashboard shows that the public card shape lacks."""

    next_attempt_at: datetime | None
    cost_usd: float


def board_cards(store: CardStore, *, status: str | None, squad: str | None, limit: int | None, offset: int,
                card_ids: Sequence[str] | None = None) -> tuple[list[Card], dict[str, CardExtras]]:
    """A page of cards (most urgent first, then oldest) or the cards named (in that order), with
    their execution extras: one query. Rows come from our own store, already validated when they
    were written, so they are built without validating again (a 2,000-card board would spend most
    of its time there)."""
    query = select(cards_t, LANDED_COMMIT)
    if card_ids:
        query = query.where(cards_t.c.card_id.in_(list(dict.fromkeys(card_ids))))
    else:
        query = card_page_query(status=status, squad=squad, limit=limit, offset=offset)
    cards: list[Card] = []
    extras: dict[str, CardExtras] = {}
    with store.engine.connect() as conn:
        for row in conn.execute(query):
            data = row._mapping
            fields = {name: data[name] for name in _CARD_FIELDS}
            fields["status"] = Status(data["status"])
            fields["created_at"] = to_dt(data["created_at"])
            fields["updated_at"] = to_dt(data["updated_at"])
            cards.append(built(Card, fields))
            cost = round(float(data["cost_usd"] or 0.0), 6)
            extras[data["card_id"]] = CardExtras(to_dt(data["next_attempt_at"]), cost)
    if card_ids:
        order = {cid: i for i, cid in enumerate(dict.fromkeys(card_ids))}
        cards.sort(key=lambda c: order[c.card_id])
    return cards, extras


def leases_by_worker(store: CardStore) -> dict[str, list[str]]:
    """Cards each worker holds a claim on (its live leases), in one query."""
    held: dict[str, list[str]] = defaultdict(list)
    with store.engine.connect() as conn:
        rows = conn.execute(select(cards_t.c.card_id, cards_t.c.claimed_by)
                            .where(cards_t.c.claim_token.is_not(None), cards_t.c.claimed_by.is_not(None))
                            .order_by(cards_t.c.card_id))
        for r in rows:
            held[r.claimed_by].append(r.card_id)
    return dict(held)


def _history_filter(query: Select[Any], *, status: str | None, squad: str | None, agent: str | None,
                    text: str | None) -> Select[Any]:
    if status:
        query = query.where(runs_t.c.status == status)
    if squad:
        query = query.where(cards_t.c.squad == squad)
    if agent:
        query = query.where(cards_t.c.agent == agent)
    if text:
        like = f"%{text.lower()}%"
        query = query.where(or_(func.lower(runs_t.c.card_id).like(like), func.lower(cards_t.c.title).like(like)))
    return query


def run_history(store: CardStore, *, status: str | None = None, squad: str | None = None,
                agent: str | None = None, text: str | None = None, limit: int = 50,
                offset: int = 0) -> tuple[list[HistoryRun], int]:
    """One page of runs, newest first, with their card's title, squad and agent; and the total."""
    joined = runs_t.join(cards_t, runs_t.c.card_id == cards_t.c.card_id)
    page = _history_filter(select(*_RUN_COLUMNS, cards_t.c.title, cards_t.c.squad, cards_t.c.agent)
                           .select_from(joined), status=status, squad=squad, agent=agent, text=text)
    count = _history_filter(select(func.count()).select_from(joined), status=status, squad=squad,
                            agent=agent, text=text)
    with store.engine.connect() as conn:
        total = int(conn.execute(count).scalar() or 0)
        rows = conn.execute(page.order_by(runs_t.c.id.desc()).limit(limit).offset(offset)).all()
    runs = []
    for r in rows:
        data = dict(r._mapping)
        for key in ("started_at", "ended_at"):
            data[key] = to_dt(data[key])
        data["log_available"] = False
        runs.append(HistoryRun.model_validate(data))
    return runs, total
