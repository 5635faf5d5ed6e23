"""The events of the `task_updates` stream and the live logs, over Redis streams.

Events own their schema here: one constructor per type (`status_event`, `progress_event`,
`log_event`, `added_event`, and `connected_event` for the WebSocket greeting) returns the exact fields written to
the stream; every writer uses them, and docs/api.md "WebSocket" is tested against them.

Events and live logs are best effort: a Redis outage must never fail a card, so writes are bounded
by socket timeouts and, after a failure, skipped for a short back-off instead of blocking every line.
An event written by an attempt carries a unique `event_id` (attempt token + sequence) so readers can
drop the duplicates a retried write may produce.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio as aioredis
import structlog

from squad.core.constants import (
    ADDED_EVENT_MAX_IDS,
    LIVE_LOG_ENTRY_MAX_CHARS,
    LOG_EVENT_MAX_CHARS,
    REDIS_FULL_HINT,
    SETTLED_MAXLEN,
    TASK_LOGS_MAX_BYTES,
    TASK_LOGS_MAXLEN,
    TASK_LOGS_MIN_ENTRIES,
    TASK_UPDATES_MAXLEN,
)
from squad.core.masking import mask_text
from squad.core.namespace import RedisKeys
from squad.core.statuses import Status, statuses_where
from squad.live.connections import redis_client, redis_is_full, stream_tail

log = structlog.get_logger(__name__)
OUTAGE_BACKOFF_S = 2.0
#: Fields a reader turns back into numbers (the stream holds strings).
NUMERIC_FIELDS = {"progress": int, "attempt": int, "elapsed": float, "count": int}
#: Fields a reader turns back into lists (the stream holds their JSON).
LIST_FIELDS = frozenset({"card_ids"})
CONNECTED_MESSAGE = "connected to squad task updates"

#: One event as written to `task_updates`: flat string fields.
Event = dict[str, str]
#: Statuses after which an orchestrator pass may have something to do (a dependant to release, a
#: retry or a new card to queue; `StatusFacts.wakes_orchestrator`): their events also go to the small
#: `settled` stream, the only one an orchestrator reads. QUEUED and IN_PROGRESS never free anything.
WAKE_STATUSES = frozenset(s.value for s in statuses_where("wakes_orchestrator"))


def clip_text(text: str, limit: int) -> str:
    """`text` cut to `limit` characters with a marker of how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]} …[cut {len(text) - limit} chars]"


def live_log_maxlen(entries: list[tuple[str, str, str]]) -> int:
    """MAXLEN for a card's live stream: TASK_LOGS_MAXLEN entries, fewer when this batch's lines are big,
    so the stream stays near TASK_LOGS_MAX_BYTES whatever the line sizes."""
    average = sum(len(message) + 48 for _ts, _level, message in entries) // max(1, len(entries))
    return max(TASK_LOGS_MIN_ENTRIES, min(TASK_LOGS_MAXLEN, TASK_LOGS_MAX_BYTES // max(1, average)))


def iso_now() -> str:
    """UTC timestamp in ISO 8601."""
    return datetime.now(tz=UTC).isoformat(timespec="milliseconds")


def format_log_line(timestamp: str, level: str, message: str) -> str:
    """One line of an archived log: `<timestamp> <LEVEL> <message>`."""
    return f"{timestamp} {level} {message}"


def parse_log_line(line: str) -> tuple[str, str, str]:
    """(timestamp, level, message) of an archived line; a line of another shape is an INFO message."""
    ts, level, message = [*line.split(" ", 2), "", ""][:3]
    if not ts[:4].isdigit() or not level.isupper():
        return "", "INFO", line
    return ts, level, message


# ---- the events (docs/api.md "WebSocket") ------------------------------------------------------
def _event(event_type: str, card_id: str, task_id: str | None, event_id: str | None, timestamp: str | None,
           **fields: object) -> Event:
    """The fields every event has, then its own (a None is left out; non-strings as JSON)."""
    data = {"type": event_type, "card_id": card_id, "task_id": task_id or "", "timestamp": timestamp or iso_now()}
    if event_id:
        data["event_id"] = event_id
    for key, value in fields.items():
        if value is not None:
            data[key] = value if isinstance(value, str) else json.dumps(value)
    return data


def status_event(card_id: str, status: Status, task_id: str | None = None, *, attempt: int | None = None,
                 worker: str | None = None, error: str | None = None, event_id: str | None = None) -> Event:
    """A card's new status; with the attempt it concerns, the worker that claimed it (IN_PROGRESS)
    and the error that ended an attempt, when there are."""
    return _event("status", card_id, task_id, event_id, None, status=status.value, attempt=attempt,
                  worker=worker, error=error)


def progress_event(card_id: str, task_id: str, *, progress: int, current_step: str, elapsed: float,
                   worker: str, event_id: str | None = None) -> Event:
    """How far a running attempt is: percent, step, seconds since it started, on which worker."""
    return _event("progress", card_id, task_id, event_id, None, progress=progress, current_step=current_step,
                  elapsed=elapsed, worker=worker)


def log_event(card_id: str, task_id: str, *, level: str, message: str, timestamp: str | None = None,
              skipped: int | None = None, event_id: str | None = None) -> Event:
    """One line of an attempt's log (its own timestamp), or the note that `skipped` lines of a batch
    went to the card's log only."""
    return _event("log", card_id, task_id, event_id, timestamp, level=level, message=message, skipped=skipped)


def question_event(card_id: str, task_id: str | None, *, question: str, choices: list[str] | None = None,
                   attempt: int | None = None, event_id: str | None = None) -> Event:
    """An attempt's agent asked a person (`ask_human`): the card is NEEDS_INPUT until answered."""
    return _event("question", card_id, task_id, event_id, None, question=question, choices=choices,
                  attempt=attempt)


def answer_event(card_id: str, task_id: str | None, *, answer: str, by: str | None = None,
                 event_id: str | None = None) -> Event:
    """A person answered a card's question (`squad answer`, the API, the dashboard)."""
    return _event("answer", card_id, task_id, event_id, None, answer=answer, by=by)


def note_event(card_id: str, task_id: str | None, *, message: str, event_id: str | None = None) -> Event:
    """A note an attempt's agent left on its card (`add_note`; also a `NOTE` line of its log)."""
    return _event("note", card_id, task_id, event_id, None, message=message)


def added_event(card_ids: list[str], *, event_id: str | None = None) -> Event:
    """New cards (TODO) added together, named in one event instead of a `status` event each: at most
    ADDED_EVENT_MAX_IDS of them (`added_events` splits a bigger batch). No single card: `card_id` is
    empty, `card_ids` lists them, `count` says how many."""
    if not card_ids or len(card_ids) > ADDED_EVENT_MAX_IDS:
        raise ValueError(f"an added event names 1-{ADDED_EVENT_MAX_IDS} cards, not {len(card_ids)}")
    return _event("added", "", None, event_id, None, status=Status.TODO.value, count=len(card_ids),
                  card_ids=card_ids)


def added_events(card_ids: list[str]) -> list[Event]:
    """The events that tell readers these cards were just added (TODO): a `status` event for one
    card, else one `added` event per ADDED_EVENT_MAX_IDS of them (an import of 20,000 cards writes 20
    events, not 20,000)."""
    if len(card_ids) == 1:
        return [status_event(card_ids[0], Status.TODO)]
    return [added_event(card_ids[i:i + ADDED_EVENT_MAX_IDS]) for i in range(0, len(card_ids), ADDED_EVENT_MAX_IDS)]


def event_card_ids(fields: dict[str, str]) -> list[str]:
    """The cards an event (as written to a stream) is about: its `card_id`, or an `added` event's
    `card_ids` (an entry that cannot be read names none)."""
    raw = fields.get("card_ids")
    if raw is None:
        card_id = fields.get("card_id", "")
        return [card_id] if card_id else []
    try:
        ids = json.loads(raw)
    except ValueError:
        return []
    return [str(i) for i in ids] if isinstance(ids, list) else []


def names_card(fields: dict[str, str], card_id: str) -> bool:
    """Whether an event (as written to a stream) is about this card (a WebSocket's `card_id=`)."""
    return fields.get("card_id") == card_id or ("card_ids" in fields and card_id in event_card_ids(fields))


def connected_event() -> dict[str, str]:
    """The WebSocket's first message (not a stream entry: no `id`, `card_id` or `task_id`)."""
    return {"type": "connected", "timestamp": iso_now(), "message": CONNECTED_MESSAGE}


def _bounded_event(event: Event) -> Event:
    """A log event's message clipped to LOG_EVENT_MAX_CHARS (the card's own log keeps it whole)."""
    if event.get("type") == "log" and len(event.get("message", "")) > LOG_EVENT_MAX_CHARS:
        return {**event, "message": clip_text(event["message"], LOG_EVENT_MAX_CHARS)}
    return event


def _add_event(pipe: redis.client.Pipeline | aioredis.client.Pipeline, keys: RedisKeys, event: Event) -> None:
    """Queue one event on a pipeline: on `task_updates` first, and a wake-up status also on `settled`
    (same round trip)."""
    pipe.xadd(keys.task_updates, _bounded_event(event), maxlen=TASK_UPDATES_MAXLEN, approximate=True)
    kind = event.get("type")
    if kind == "status" and event.get("status") in WAKE_STATUSES:
        pipe.xadd(keys.settled, {"card_id": event["card_id"], "status": event["status"]}, maxlen=SETTLED_MAXLEN,
                  approximate=True)
    elif kind == "added":  # new cards: one wake-up naming them all
        pipe.xadd(keys.settled, {"card_id": "", "status": event["status"], "card_ids": event["card_ids"]},
                  maxlen=SETTLED_MAXLEN, approximate=True)


async def publish_async(client: aioredis.Redis, keys: RedisKeys, event: Event) -> str:
    """Append one event from an event loop (the API); the caller bounds the wait."""
    async with client.pipeline(transaction=False) as pipe:
        _add_event(pipe, keys, event)
        ids = await pipe.execute()
    return str(ids[0])


def decode_event(entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """A stream entry as a JSON-able event with its stream `id`."""
    event: dict[str, Any] = {"id": entry_id}
    for key, value in fields.items():
        if key in LIST_FIELDS:
            try:
                event[key] = json.loads(value)
                continue
            except ValueError:
                pass
        conv = NUMERIC_FIELDS.get(key)
        if conv is not None:
            try:
                event[key] = conv(value)
                continue
            except ValueError:
                pass
        event[key] = value
    return event


class EventBus:
    """Publishes events to `<namespace>:task_updates` and log lines to `<namespace>:task:logs:<card_id>`
    (the namespace is the store's: `store.redis_keys`)."""

    def __init__(self, url: str, keys: RedisKeys, *, log_ttl_s: int = 86400) -> None:
        self.url = url
        self.keys = keys
        self.log_ttl_s = log_ttl_s
        self.redis = redis_client(url)
        self._down_until = 0.0
        self._lock = threading.Lock()

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: Exception, what: str) -> None:
        self._down_until = time.monotonic() + OUTAGE_BACKOFF_S
        if redis_is_full(exc):
            log.error(REDIS_FULL_HINT, what=what)
        else:
            log.warning("redis write failed", what=what, error=mask_text(str(exc)))

    def ping(self) -> bool:
        """True when Redis answers."""
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False

    def publish(self, event: Event) -> str | None:
        """Append one event to `task_updates`; returns its stream id, or None if Redis is down."""
        return self.publish_many([event])

    def publish_many(self, events: Iterable[Event]) -> str | None:
        """Append events in one pipeline."""
        events = list(events)
        if not events or not self._available():
            return None
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                last = 0  # the result index of the last task_updates entry
                for ev in events:
                    last = len(pipe)
                    _add_event(pipe, self.keys, ev)
                ids = pipe.execute()
            return str(ids[last])
        except redis.RedisError as exc:
            self._failed(exc, "event")
            return None

    def append_logs(self, card_id: str, task_id: str | None, entries: list[tuple[str, str, str]],
                    events: list[Event] | None = None) -> bool:
        """Write a batch of (timestamp, level, message) lines, plus their events, in one pipeline."""
        if not entries or not self._available():
            return False
        key = self.keys.task_logs(card_id)
        entries = [(ts, level, clip_text(message, LIVE_LOG_ENTRY_MAX_CHARS)) for ts, level, message in entries]
        maxlen = live_log_maxlen(entries)
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for ts, level, message in entries:
                    pipe.xadd(key, {"timestamp": ts, "level": level, "message": message,
                                    "task_id": task_id or ""},
                              maxlen=maxlen, approximate=True)
                pipe.expire(key, self.log_ttl_s)
                for ev in events or []:
                    _add_event(pipe, self.keys, ev)
                pipe.execute()
            return True
        except redis.RedisError as exc:
            self._failed(exc, "log")
            return False

    # ---- readers ----------------------------------------------------------------------------
    def read_logs(self, card_id: str, *, after: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Live log entries of a card: the last `limit`, or the first `limit` after an entry id."""
        key = self.keys.task_logs(card_id)
        if after:
            rows = self.redis.xrange(key, min=f"({after}", max="+", count=limit)
        else:
            rows = list(reversed(self.redis.xrevrange(key, max="+", min="-", count=limit)))
        return [{"id": entry_id, **fields} for entry_id, fields in rows]

    def settled_position(self) -> str:
        """The id of the newest wake-up (`settled`): a reader starting there misses none published later."""
        return stream_tail(self.redis, self.keys.settled)

    def wait_status(self, after_id: str, *, block_s: float) -> tuple[list[tuple[str, str]], str]:
        """Block up to `block_s` for status events in WAKE_STATUSES after id `after_id` of `settled`.

        Returns ((card_id, status) of those events, one per card an `added` event names; last id read):
        every one already in the stream comes at once (up to 500 entries), and the caller resumes from
        that id, so none is missed between two waits. `after_id` "$" means "from now". Log and progress
        events never wake the reader: they are on `task_updates` only (an orchestrator reading that
        stream woke for every batch of every running card).
        """
        last = self.settled_position() if after_id == "$" else after_id
        rows = self.redis.xread({self.keys.settled: last}, count=500, block=max(1, int(block_s * 1000)))
        found: list[tuple[str, str]] = []
        for _stream, entries in rows or []:
            for entry_id, fields in entries:
                last = str(entry_id)
                status = str(fields.get("status", ""))
                found += [(card_id, status) for card_id in event_card_ids(fields)] or [("", status)]
        return found, last

    def close(self) -> None:
        """Release the connection pool."""
        self.redis.close()


def try_event_bus(url: str, log_ttl_s: int, keys: RedisKeys) -> EventBus | None:
    """An EventBus when Redis answers, else None (local mode without Redis)."""
    bus = EventBus(url, keys, log_ttl_s=log_ttl_s)
    return bus if bus.ping() else None
