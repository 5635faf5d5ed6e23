"""A card's task: live log, retry, cancel (the last two shared with the CLI through `squad.actions.lifecycle`)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import redis.asyncio as aioredis
from anyio import to_thread
from fastapi import APIRouter, Body, Query
from redis.exceptions import RedisError

from squad.actions.lifecycle import STOP_POLL_S, STOP_WAIT_S, cancel_card, retry_card, runs_closed
from squad.api.deps import Authorized, CardIdDep, StateDep
from squad.api.schemas import (
    BulkRetryIn,
    BulkRetryItem,
    BulkRetryOut,
    CancelOut,
    LogEntry,
    RetryIn,
    RetryOut,
    error_responses,
)
from squad.core.cards import CARD_ID_RE
from squad.core.errors import NotFoundError, SquadError
from squad.core.statuses import STATUS_FACTS
from squad.live.connections import STREAM_ID_RE, stream_key
from squad.live.events import parse_log_line
from squad.store.card_store import CardStore

router = APIRouter(tags=["tasks"])
MAX_LOG_LIMIT = 1000

LimitQ = Annotated[int, Query(ge=1, le=MAX_LOG_LIMIT, description="At most this many entries")]
AfterQ = Annotated[str | None, Query(pattern=STREAM_ID_RE.pattern,
                                     description="Only entries after this entry id (for polling)")]


async def _live(events: aioredis.Redis, key: str, after: str | None, limit: int) -> list[LogEntry] | None:
    """Entries of the live stream `key`; None when it does not exist (expired) or Redis is down."""
    try:
        async with events.pipeline(transaction=False) as pipe:
            pipe.exists(key)
            if after:
                pipe.xrange(key, min=f"({after}", max="+", count=limit)
            else:
                pipe.xrevrange(key, max="+", min="-", count=limit)
            exists, rows = await pipe.execute()
    except RedisError:
        return None
    if not exists:
        return None
    if not after:
        rows = list(reversed(rows))
    return [LogEntry(id=str(eid), timestamp=f.get("timestamp", ""), level=f.get("level", "INFO"),
                     message=f.get("message", ""), task_id=f.get("task_id") or None) for eid, f in rows]


def archived_entries(store: CardStore, card_id: str) -> list[LogEntry]:
    """The last run's archived log as entries with ids `0-1`, `0-2`, … (blocking)."""
    found = store.last_run_log(card_id)
    if found is None:
        return []
    run, text = found
    entries: list[LogEntry] = []
    for n, line in enumerate(text.splitlines(), start=1):
        ts, level, message = parse_log_line(line)
        entries.append(LogEntry(id=f"0-{n}", timestamp=ts, level=level, message=message, task_id=run.task_id))
    return entries


@router.get("/api/tasks/{card_id}/logs", response_model=list[LogEntry], responses=error_responses(404, 422))
async def task_logs(card_id: CardIdDep, state: StateDep, limit: LimitQ = 100,
                    after: AfterQ = None) -> list[LogEntry]:
    """The card's live log (last `limit` lines, or the first `limit` after `after`); once the live
    stream has expired, the archived log of its last run."""
    await to_thread.run_sync(state.store.get_card, card_id)
    live = await _live(state.events, state.keys.task_logs(card_id), after, limit)
    if live is not None:
        return live
    entries = await to_thread.run_sync(archived_entries, state.store, card_id)
    if after:
        mark = stream_key(after)
        return [e for e in entries if stream_key(e.id) > mark][:limit]
    return entries[-limit:]


@router.post("/api/tasks/{card_id}/retry", response_model=RetryOut, dependencies=[Authorized],
             responses=error_responses(400, 401, 404, 422))
def retry(card_id: CardIdDep, state: StateDep, body: Annotated[RetryIn | None, Body()] = None) -> RetryOut:
    """Queue a new attempt of a FAILED or CANCELLED card; with `force`, of any card that ran
    (a running attempt is revoked and its process group ended first)."""
    force = body.force if body is not None else False
    res = retry_card(state.producers.get(), card_id, force=force)
    return RetryOut(status=res.status, card_id=res.card_id, old_task_id=res.old_task_id,
                    new_task_id=res.new_task_id, message=res.message)


@router.post("/api/tasks/{card_id}/cancel", response_model=CancelOut, dependencies=[Authorized],
             responses=error_responses(400, 401, 404))
async def cancel(card_id: CardIdDep, state: StateDep) -> CancelOut:
    """Cancel: the card becomes CANCELLED, a running agent's process group is ended, no retry.

    The answer waits for the attempt to end its agent, but without holding a worker thread while it
    waits: a storm of cancels must not queue behind one another in the thread pool.
    """
    producer = state.producers.get()
    before = await to_thread.run_sync(producer.store.get_card, card_id)
    card = await to_thread.run_sync(lambda: cancel_card(producer, card_id, wait=False))
    task_id = before.celery_task_id
    if STATUS_FACTS[before.status].running:
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline and not await to_thread.run_sync(runs_closed, producer, card_id):
            await asyncio.sleep(STOP_POLL_S)
    return CancelOut(status="cancelled", card_id=card_id, task_id=task_id, card=card,
                     message=f"card {card_id} cancelled")


@router.post("/api/tasks/retry", response_model=BulkRetryOut, dependencies=[Authorized],
             responses=error_responses(401, 422))
def retry_many(body: BulkRetryIn, state: StateDep) -> BulkRetryOut:
    """Retry several cards (the dashboard's "retry selected"); each card succeeds or fails on its own
    with the status code a single retry would give."""
    producer = state.producers.get()
    results: list[BulkRetryItem] = []
    for card_id in dict.fromkeys(body.card_ids):
        try:
            if not CARD_ID_RE.fullmatch(card_id):
                raise NotFoundError(f"unknown card {card_id!r}")
            res = retry_card(producer, card_id, force=body.force)
            results.append(BulkRetryItem(card_id=card_id, ok=True, status_code=200, new_task_id=res.new_task_id,
                                         message=res.message))
        except SquadError as exc:
            results.append(BulkRetryItem(card_id=card_id, ok=False, status_code=exc.http_status, message=str(exc)))
    return BulkRetryOut(retried=sum(1 for r in results if r.ok), results=results)
