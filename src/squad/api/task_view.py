"""Cards with their task state (`GET /api/cards/enhanced`), without N+1.

One SQL query for the page of cards and one for their last runs; one MGET of the Celery result
keys (results DB) and one script call checking every live log (events DB), sent concurrently.
The store decides the status (the Celery result can say FAILURE for work that was done, see
docs/architecture.md "Surviving Redis faults"); the Celery meta only adds what the worker
reported (result, traceback, live elapsed).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
import structlog
from pydantic import TypeAdapter
from redis.exceptions import NoScriptError, RedisError

from squad.api.history import CardExtras, board_cards
from squad.api.schemas import CeleryTask, EnhancedCard, built
from squad.core.cards import Card, Run
from squad.core.constants import STEP_IN_PROGRESS
from squad.core.namespace import RedisKeys
from squad.core.retries import retries_used
from squad.core.settings import Settings
from squad.core.statuses import STATUS_FACTS, RunStatus, Status, TaskState
from squad.live.connections import stream_id_time
from squad.store.card_store import CardStore

log = structlog.get_logger(__name__)
CELERY_META_PREFIX = "celery-task-meta-"  # Celery's Redis result backend key of a task

#: a status's own task state (`StatusFacts.celery_state`); IN_PROGRESS, TODO and BLOCKED are derived below
_BY_STATUS: dict[Status, TaskState] = {s: f.celery_state for s, f in STATUS_FACTS.items() if f.celery_state}
_BY_RUN: dict[str, TaskState] = {
    RunStatus.SUCCEEDED: "SUCCESS",
    RunStatus.FAILED: "FAILURE",
    RunStatus.LOST: "FAILURE",
    RunStatus.CANCELLED: "REVOKED",
    RunStatus.RUNNING: "STARTED",
}


def page_with_runs(store: CardStore, *, status: str | None, squad: str | None, limit: int | None,
                   offset: int, card_ids: list[str] | None = None,
                   ) -> tuple[list[Card], dict[str, Run], dict[str, CardExtras]]:
    """The page of cards (or the cards named) with their execution extras, and the last run of
    each: two queries (blocking; call from a thread)."""
    cards, extras = board_cards(store, status=status, squad=squad, limit=limit, offset=offset, card_ids=card_ids)
    return cards, store.last_run_status([c.card_id for c in cards]), extras


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def task_state(status: Status, progress: int, run_status: str | None, *, reported: bool = False) -> TaskState | None:
    """The Celery-style status of a card's task from the store's facts: the card's status and
    progress, its last run's status, and whether the worker reported progress."""
    if status == Status.IN_PROGRESS:
        return "PROGRESS" if reported or progress > STEP_IN_PROGRESS[0] else "STARTED"
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    # TODO / BLOCKED: only a card that ran before has a task to show.
    return _BY_RUN.get(run_status, "FAILURE") if run_status is not None else None


def task_status(card: Card, run: Run | None, meta: dict[str, Any] | None) -> TaskState | None:
    """The Celery-style status of a card's task, decided by the store."""
    return task_state(card.status, card.progress, run.status if run is not None else None,
                      reported=meta is not None and meta.get("status") == "PROGRESS")


def run_elapsed(started_at: float, ended_at: float | None, now: float) -> float:
    """Seconds a run took (or has taken so far, while it runs)."""
    return round(max(0.0, (ended_at if ended_at is not None else now) - started_at), 3)


def celery_task(card: Card, run: Run | None, meta: dict[str, Any] | None, *, settings: Settings,
                now: float) -> CeleryTask | None:
    """The `celery_task` object of docs/api.md, or None for a card that never had a task."""
    if card.celery_task_id is None and run is None:
        return None
    status = task_status(card, run, meta)
    if status is None:
        return None
    # The last run belongs to the current task unless the card was queued again since.
    current = run if run is not None and status != "PENDING" else None
    elapsed = eta = None
    if current is not None and current.started_at is not None:
        elapsed = run_elapsed(current.started_at.timestamp(),
                              current.ended_at.timestamp() if current.ended_at is not None else None, now)
        if status in ("STARTED", "PROGRESS") and 0 < card.progress < 100:
            eta = round(elapsed * (100 - card.progress) / card.progress, 1)
    meta = meta or {}
    result = meta.get("result") if meta.get("status") == "SUCCESS" else None
    traceback = meta.get("traceback") if isinstance(meta.get("traceback"), str) else None
    if traceback is None and status in ("FAILURE", "RETRY"):
        traceback = card.last_error
    worker = current.worker if current is not None else None
    if worker is None and isinstance(meta.get("result"), dict):
        worker = meta["result"].get("worker")
    return CeleryTask(
        task_id=card.celery_task_id or (run.task_id if run is not None else None),
        status=status, progress=card.progress, current_step=card.current_step,
        elapsed=elapsed, eta=eta, worker=worker, retries=retries_used(card.attempts, card.retry_base),
        max_retries=settings.limits_for(card).max_retries,
        result=result, traceback=traceback,
    )


async def task_metas(results: aioredis.Redis, task_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Celery result metas of many tasks in one MGET (empty when Redis is down)."""
    if not task_ids:
        return {}
    try:
        raw = await results.mget([CELERY_META_PREFIX + tid for tid in task_ids])
    except RedisError as exc:
        log.info("celery results unavailable", error=str(exc))
        return {}
    metas: dict[str, dict[str, Any]] = {}
    for tid, value in zip(task_ids, raw, strict=True):
        if not value:
            continue
        try:
            data = json.loads(value)
        except ValueError:
            continue
        if isinstance(data, dict):
            metas[tid] = data
    return metas


#: The last entry id of many log streams in one command ('' for a missing stream); an entry id
#: starts with its time in ms, which is when the card last printed something.
_EXISTS_EACH = ("local r = {} for i, k in ipairs(KEYS) do "
                "local e = redis.call('XREVRANGE', k, '+', '-', 'COUNT', 1) "
                "if e[1] then r[i] = e[1][1] else r[i] = '' end end return r")
_EXISTS_EACH_SHA = hashlib.sha1(_EXISTS_EACH.encode()).hexdigest()
ENHANCED_LIST: TypeAdapter[list[EnhancedCard]] = TypeAdapter(list[EnhancedCard])


async def live_logs(events: aioredis.Redis, keys: RedisKeys, card_ids: list[str]) -> dict[str, float]:
    """Cards with a live log stream -> time of its last line (epoch s), in one command (empty when
    Redis is down)."""
    if not card_ids:
        return {}
    streams = [keys.task_logs(c) for c in card_ids]
    try:
        try:
            flags = await events.evalsha(_EXISTS_EACH_SHA, len(streams), *streams)
        except NoScriptError:  # first call on this Redis (or after a restart): load it
            flags = await events.eval(_EXISTS_EACH, len(streams), *streams)
    except RedisError as exc:
        log.info("live logs unavailable", error=str(exc))
        return {}
    out: dict[str, float] = {}
    for cid, last in zip(card_ids, flags, strict=True):
        at = stream_id_time(str(last))
        if at is not None:
            out[cid] = at
    return out


async def enhance(cards: list[Card], runs: dict[str, Run], *, results: aioredis.Redis,
                  events: aioredis.Redis, keys: RedisKeys, settings: Settings,
                  extras: dict[str, CardExtras] | None = None) -> list[EnhancedCard]:
    """Attach `celery_task`, `logs_available` and the board's extras to a page of cards."""
    task_ids = [c.celery_task_id for c in cards if c.celery_task_id]
    metas, live = await asyncio.gather(task_metas(results, task_ids),
                                       live_logs(events, keys, [c.card_id for c in cards]))
    now = time.time()
    rows: list[EnhancedCard] = []
    for card in cards:
        run = runs.get(card.card_id)
        meta = metas.get(card.celery_task_id) if card.celery_task_id else None
        task = celery_task(card, run, meta, settings=settings, now=now)
        archived = run is not None and run.log_available
        last_line = live.get(card.card_id)
        extra = (extras or {}).get(card.card_id)
        rows.append(built(EnhancedCard, {
            **card.__dict__, "celery_task": task, "logs_available": last_line is not None or archived,
            "last_output_at": _utc(last_line) if last_line is not None else None,
            "next_attempt_at": extra.next_attempt_at if extra is not None else None,
            "cost_usd": extra.cost_usd if extra is not None else 0.0,
            "time_limit_s": settings.limits_for(card).time_limit_s}))
    # Every part is already typed (the card from the store, the task built above): no second
    # validation pass, which would cost more than the rest of the request on a big board.
    return rows
