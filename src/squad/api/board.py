"""The board's compact read (`GET /api/board`): what a board card shows, for a page of cards.

One SQL query (the cards' board columns joined with their latest run, no per-card query) and one
Redis round trip (the last live-log line of the running cards only). Rows become plain dicts that
are serialized once: no model is built per card, and fields without a value are left out, so a
2,000-card board is a fraction of `/api/cards/enhanced`'s size and server time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from sqlalchemy import Select, func, select

from squad.api.task_view import live_logs, run_elapsed, task_state
from squad.core.namespace import RedisKeys
from squad.core.settings import CardLimits, Settings
from squad.core.statuses import Status
from squad.store.card_store import CardStore, card_page_query
from squad.store.tables import cards as cards_t
from squad.store.tables import runs as runs_t

_LAST = runs_t.alias("last_run")
_LATEST_RUN_ID = (select(func.max(_LAST.c.id)).where(_LAST.c.card_id == cards_t.c.card_id)
                  .correlate(cards_t).scalar_subquery())
_COLUMNS = (cards_t.c.card_id, cards_t.c.title, cards_t.c.status, cards_t.c.priority, cards_t.c.attempts,
            cards_t.c.progress, cards_t.c.squad, cards_t.c.agent, cards_t.c.current_step, cards_t.c.last_error,
            cards_t.c.created_at, cards_t.c.updated_at, cards_t.c.next_attempt_at, cards_t.c.cost_usd,
            cards_t.c.time_limit, cards_t.c.soft_time_limit, cards_t.c.max_retries,
            runs_t.c.status.label("run_status"), runs_t.c.worker, runs_t.c.started_at, runs_t.c.ended_at,
            cards_t.c.parent, cards_t.c.question, cards_t.c.choices, runs_t.c.verify_exit, runs_t.c.landed_commit)


class _Limits(NamedTuple):
    time_limit: float | None
    soft_time_limit: float | None
    max_retries: int | None


def board_query(*, status: str | None, squad: str | None, limit: int | None, offset: int,
                card_ids: Sequence[str] | None = None) -> Select[Any]:
    """The board columns of a page of cards in board order (or of the cards named), each row
    joined with the card's latest run."""
    if card_ids:
        query = select(*_COLUMNS).where(cards_t.c.card_id.in_(list(dict.fromkeys(card_ids))))
    else:
        query = card_page_query(status=status, squad=squad, limit=limit, offset=offset).with_only_columns(*_COLUMNS)
    return query.select_from(cards_t.outerjoin(runs_t, runs_t.c.id == _LATEST_RUN_ID))


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def board_rows(store: CardStore, settings: Settings, *, status: str | None, squad: str | None,
               limit: int | None, offset: int, card_ids: Sequence[str] | None = None,
               now: float | None = None) -> list[dict[str, Any]]:
    """`BoardCard` dicts of a page of cards (blocking: one SQL query; call from a thread)."""
    now = time.time() if now is None else now
    limits: dict[_Limits, CardLimits] = {}  # most cards share the defaults: resolve each set once
    rows: list[dict[str, Any]] = []
    with store.engine.connect() as conn:
        result = conn.execute(board_query(status=status, squad=squad, limit=limit, offset=offset,
                                          card_ids=card_ids)).all()
    for (card_id, title, status_, priority, attempts, progress, squad_, agent, step, error, created, updated,
         next_at, cost, hard, soft, retries, run_status, worker, started, ended, parent, question, choices,
         verify_exit, landed_commit) in result:
        key = _Limits(hard, soft, retries)
        lim = limits.get(key)
        if lim is None:
            lim = limits[key] = settings.limits_for(key)
        row: dict[str, Any] = {
            "card_id": card_id, "title": title, "status": status_, "priority": priority, "attempts": attempts,
            "progress": progress, "max_retries": lim.max_retries, "time_limit_s": lim.time_limit_s,
            "cost_usd": round(cost or 0.0, 6), "created_at": _utc(created), "updated_at": _utc(updated)}
        for name, value in (("squad", squad_), ("agent", agent), ("current_step", step), ("last_error", error),
                            ("parent", parent), ("question", question), ("choices", choices),
                            ("verify_exit", verify_exit), ("landed_commit", landed_commit)):
            if value is not None:
                row[name] = value
        if next_at is not None:
            row["next_attempt_at"] = _utc(next_at)
        task = task_state(Status(status_), progress, run_status)
        if task is not None:
            row["task_status"] = task
            # The last run belongs to the current task unless the card was queued again since.
            if run_status is not None and task != "PENDING":
                row["elapsed"] = run_elapsed(started, ended, now)
                if worker is not None:
                    row["worker"] = worker
        rows.append(row)
    if card_ids:
        order = {cid: i for i, cid in enumerate(dict.fromkeys(card_ids))}
        rows.sort(key=lambda row: order[row["card_id"]])
    return rows


async def add_last_output(rows: list[dict[str, Any]], events: aioredis.Redis, keys: RedisKeys) -> None:
    """`last_output_at` of the running cards (the stall countdown), in one Redis round trip."""
    running = [row["card_id"] for row in rows if row["status"] == Status.IN_PROGRESS.value]
    last = await live_logs(events, keys, running)
    if last:
        for row in rows:
            at = last.get(row["card_id"])
            if at is not None:
                row["last_output_at"] = _utc(at)
