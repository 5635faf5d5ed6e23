"""`WS /ws/tasks`: every event of `task_updates` (docs/api.md "WebSocket") to every socket, in order.

One reader per server process (`XREAD BLOCK` on the stream) fans each event out to a bounded
queue per socket; it never awaits a socket, so a slow client cannot stall the others. A client
whose queue overflows is closed with code 4008 and a reason naming the last id it received; it
reconnects with `?since=<id>` and misses nothing still in the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import structlog
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from squad.api.auth import websocket_principal, websocket_subprotocol
from squad.core.cards import CARD_ID_RE
from squad.core.namespace import RedisKeys
from squad.live.connections import STREAM_ID_RE, STREAM_START, StreamKey, stream_key
from squad.live.events import connected_event, decode_event, names_card

log = structlog.get_logger(__name__)
router = APIRouter()

STOP_TIMEOUT_S = 3.0  # shutdown waits this long for the reader task
QUEUE_SIZE = 1000  # events buffered per socket before it counts as too slow
READ_COUNT = 500
BLOCK_MS = 2000
BACKFILL_PAGE = 1000
DEDUP_WINDOW = 10_000  # event_ids remembered to drop the duplicates of a retried XADD
ERROR_BACKOFF_S = (0.2, 0.5, 1.0, 2.0)
CLOSE_TOO_SLOW = 4008
CLOSE_UNAUTHORIZED = 4401
CLOSE_BAD_REQUEST = 1008

_GONE = (WebSocketDisconnect, RuntimeError, OSError)  # a client that went away mid-send
Item = tuple[StreamKey, str, str]  # (key, stream id, JSON text)


def encode(entry_id: str, fields: dict[str, str]) -> str:
    """One stream entry as the JSON text sent to sockets (encoded once for all of them)."""
    return json.dumps(decode_event(entry_id, fields), separators=(",", ":"))


@dataclass(eq=False)
class Subscriber:
    """One socket's bounded queue; `None` in the queue means: close, you are too slow."""

    card_id: str | None
    queue: asyncio.Queue[Item | str | None]  # str: a control reply (`pong`) sent as is
    kicked: bool = False
    last_sent: str | None = None


class EventHub:
    """The process's single reader of `task_updates` and its fan-out."""

    def __init__(self, redis: aioredis.Redis, keys: RedisKeys, *, queue_size: int = QUEUE_SIZE,
                 block_ms: int = BLOCK_MS) -> None:
        self.redis = redis
        self.stream = keys.task_updates
        self.queue_size = queue_size
        # A socket must hold a whole batch, or a burst alone would count as falling behind.
        self.read_count = max(1, min(READ_COUNT, queue_size // 2))
        self.block_ms = block_ms
        self.subscribers: set[Subscriber] = set()
        self.last_id: str | None = None
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._task: asyncio.Task[None] | None = None

    @property
    def count(self) -> int:
        """Open sockets."""
        return len(self.subscribers)

    async def start(self) -> None:
        """Start the reader task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="squad-ws-reader")

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop the reader, waiting at most `timeout_s`: a reader stuck in a socket read (seen with
        uvloop) must not hold the server's shutdown, and with it SIGINT/SIGTERM, forever."""
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            done, _pending = await asyncio.wait({task}, timeout=timeout_s)
            if not done:
                log.warning("event reader did not stop in time; abandoning it", timeout_s=timeout_s)
            elif not task.cancelled() and task.exception() is not None:
                log.warning("event reader ended with an error", error=repr(task.exception()))

    def subscribe(self, card_id: str | None) -> Subscriber:
        """Start buffering live events for a socket (before any backfill, so nothing falls between)."""
        sub = Subscriber(card_id=card_id, queue=asyncio.Queue(maxsize=self.queue_size))
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget a socket."""
        self.subscribers.discard(sub)

    async def _tail_id(self) -> str:
        rows = await self.redis.xrevrange(self.stream, max="+", min="-", count=1)
        return str(rows[0][0]) if rows else STREAM_START

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                if self.last_id is None:
                    self.last_id = await self._tail_id()
                elif failures:
                    # Redis came back: if it lost the stream, start over at the new one's beginning.
                    tail = await self._tail_id()
                    if stream_key(tail) < stream_key(self.last_id):
                        log.warning("event stream restarted; reading it from the start", old=self.last_id)
                        self.last_id = STREAM_START
                res = await self.redis.xread({self.stream: self.last_id}, count=self.read_count,
                                             block=self.block_ms)
                failures = 0
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                delay = ERROR_BACKOFF_S[min(failures, len(ERROR_BACKOFF_S) - 1)]
                failures += 1
                if failures == 1:
                    log.warning("event reader lost redis", error=str(exc))
                await asyncio.sleep(delay)
                continue
            for _stream, entries in res or []:
                for entry_id, fields in entries:
                    self.last_id = str(entry_id)
                    self._fanout(str(entry_id), fields)

    def _duplicate(self, fields: dict[str, str]) -> bool:
        event_id = fields.get("event_id")
        if not event_id:
            return False
        if event_id in self._seen:
            return True
        self._seen[event_id] = None
        if len(self._seen) > DEDUP_WINDOW:
            self._seen.popitem(last=False)
        return False

    def _fanout(self, entry_id: str, fields: dict[str, str]) -> None:
        """Hand one event to every matching socket; never awaits."""
        if not self.subscribers or self._duplicate(fields):
            return
        item: Item = (stream_key(entry_id), entry_id, encode(entry_id, fields))
        for sub in list(self.subscribers):
            if sub.card_id is not None and not names_card(fields, sub.card_id):
                continue
            try:
                sub.queue.put_nowait(item)
            except asyncio.QueueFull:
                self._kick(sub)

    def _kick(self, sub: Subscriber) -> None:
        """Drop a socket that fell too far behind: empty its queue and ask it to close."""
        self.subscribers.discard(sub)
        sub.kicked = True
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.queue.put_nowait(None)


async def backfill(redis: aioredis.Redis, stream: str, since: str, card_id: str | None) -> AsyncIterator[Item]:
    """Events after `since` still in the stream, page by page, up to its current end."""
    cursor = since
    seen: set[str] = set()
    while True:
        rows = await redis.xrange(stream, min=f"({cursor}", max="+", count=BACKFILL_PAGE)
        for entry_id, fields in rows:
            cursor = str(entry_id)
            event_id = fields.get("event_id")
            if event_id:
                if event_id in seen:
                    continue  # the second copy of a retried write
                seen.add(event_id)
            if card_id is None or names_card(fields, card_id):
                yield stream_key(cursor), cursor, encode(cursor, fields)
        if len(rows) < BACKFILL_PAGE:
            return


class _Socket:
    """One connected client: a sender draining its queue (the only task that writes to the
    socket, so no lock is needed) and a receiver that queues a `pong` for every `ping`."""

    def __init__(self, ws: WebSocket, sub: Subscriber) -> None:
        self.ws, self.sub = ws, sub
        self.skip_until: StreamKey | None = None

    async def sender(self) -> None:
        queue = self.sub.queue
        while True:
            item = await queue.get()
            while True:  # drain what is already waiting without going back to the loop
                if item is None:
                    reason = f"too slow; reconnect with since={self.sub.last_sent or ''}"
                    await self.ws.close(code=CLOSE_TOO_SLOW, reason=reason[:120])
                    return
                if isinstance(item, str):
                    await self.ws.send_text(item)
                elif self.skip_until is None or item[0] > self.skip_until:
                    await self.ws.send_text(item[2])
                    self.sub.last_sent = item[1]
                if queue.empty():
                    break
                item = queue.get_nowait()

    async def receiver(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") == "ping":
                with contextlib.suppress(asyncio.QueueFull):  # that far behind, it is about to be closed
                    self.sub.queue.put_nowait("pong")


def _bad_query(since: str | None, card_id: str | None) -> str | None:
    if since is not None and not STREAM_ID_RE.match(since):
        return "since must be a stream id like 1718000000000-0"
    if card_id is not None and not CARD_ID_RE.fullmatch(card_id):
        return "card_id is not a valid card id"
    return None


@router.websocket("/ws/tasks")
async def tasks_feed(ws: WebSocket) -> None:
    """Live events: `connected` first, then every event of `task_updates` with its `id`."""
    state: Any = ws.app.state.squad
    if await websocket_principal(ws) is None:
        if "websocket.http.response" in ws.scope.get("extensions", {}):
            await ws.send_denial_response(JSONResponse({"detail": "missing or wrong API token"}, 401))
        else:
            await ws.close(code=CLOSE_UNAUTHORIZED, reason="missing or wrong API token")
        return
    since = ws.query_params.get("since")
    card_id = ws.query_params.get("card_id") or None
    await ws.accept(subprotocol=websocket_subprotocol(ws))
    problem = _bad_query(since, card_id)
    if problem is not None:
        await ws.close(code=CLOSE_BAD_REQUEST, reason=problem)
        return
    hub: EventHub = state.hub
    sub = hub.subscribe(card_id)
    sock = _Socket(ws, sub)
    try:
        await ws.send_text(json.dumps(connected_event()))
        if since is not None:
            await _send_backfill(sock, state.events, hub.stream, since, card_id)
        await _serve(sock)
    except _GONE:
        pass  # the client went away mid-send
    finally:
        hub.unsubscribe(sub)


async def _send_backfill(sock: _Socket, redis: aioredis.Redis, stream: str, since: str,
                         card_id: str | None) -> None:
    last: StreamKey = stream_key(since)
    try:
        async for key, entry_id, text in backfill(redis, stream, since, card_id):
            await sock.ws.send_text(text)
            sock.sub.last_sent, last = entry_id, key
    except RedisError as exc:
        log.warning("backfill failed", since=since, error=str(exc))
    sock.skip_until = last


async def _serve(sock: _Socket) -> None:
    tasks = {asyncio.create_task(sock.sender()), asyncio.create_task(sock.receiver())}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, _GONE):
            log.error("websocket failed", error=repr(result))
