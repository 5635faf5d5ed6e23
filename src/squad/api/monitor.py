"""Which Celery workers are alive, what they run, how much they did (`/health`, `/api/workers`).

A Celery broadcast waits its whole timeout for replies, so the answer is cached: a fresh snapshot
is served as is, a stale one is served while a refresh runs in the background, and only a very old
(or first) one makes the caller wait. Broadcasts run on a private thread pool and the broker is
pinged first, so a dead Redis answers `error` at once instead of hanging kombu's retries.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import redis.asyncio as aioredis
import structlog

from squad.core.constants import EXECUTE_TASK_NAME, HEALTH_PROBE_TIMEOUT_S
from squad.core.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

log = structlog.get_logger(__name__)
CeleryStatus = Literal["connected", "no_workers", "error", "not_available"]
FRESH_S = 2.0
MAX_STALE_S = 30.0
FORGET_S = 3600.0  # an offline worker is listed this long after it was last seen
BROADCAST_TIMEOUT_S = HEALTH_PROBE_TIMEOUT_S


@dataclass
class WorkerInfo:
    """One worker as last seen."""

    name: str
    online: bool
    active_cards: list[str] = field(default_factory=list)
    processed: int = 0
    concurrency: int | None = None
    last_seen: float | None = None
    queues: list[str] = field(default_factory=list)


@dataclass
class Snapshot:
    """The result of one probe."""

    status: CeleryStatus
    checked_at: float | None
    workers: list[WorkerInfo] = field(default_factory=list)

    @property
    def online(self) -> int:
        """Workers that answered the last broadcast."""
        return sum(1 for w in self.workers if w.online)

    def checked_at_dt(self) -> datetime | None:
        """`checked_at` as an aware datetime."""
        return None if self.checked_at is None else datetime.fromtimestamp(self.checked_at, tz=UTC)


def _ask(app: Celery, method: str) -> dict[str, Any]:
    """One `inspect` broadcast on a connection of its own (`probe_connection`: a pooled one may be
    to a Redis that restarted since)."""
    from squad.live.celery_control import probe_connection

    with probe_connection(app) as conn:
        return getattr(app.control.inspect(timeout=BROADCAST_TIMEOUT_S, connection=conn), method)() or {}


def _broadcast(app: Celery) -> tuple[dict[str, Any], dict[str, Any]]:
    """`stats` and `active` of every worker (each waits the broadcast timeout)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        stats = pool.submit(_ask, app, "stats")
        active = pool.submit(_ask, app, "active")
        return stats.result(), active.result()


class WorkerMonitor:
    """Cached view of the Celery workers."""

    def __init__(self, settings: Settings, broker: aioredis.Redis) -> None:
        self.settings = settings
        self.broker = broker
        self._app: Celery | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="squad-inspect")
        self._snapshot: Snapshot | None = None
        self._refresh: asyncio.Task[Snapshot] | None = None
        self._known: dict[str, WorkerInfo] = {}
        self._taken = 0.0

    def cached(self) -> Snapshot | None:
        """The last snapshot, without probing."""
        return self._snapshot

    async def snapshot(self) -> Snapshot:
        """Workers, probing only when the cached answer is stale."""
        if not self.settings.use_celery:
            return Snapshot(status="not_available", checked_at=time.time())
        snap = self._snapshot
        age = time.monotonic() - self._taken if snap is not None else None
        if snap is not None and age is not None and age < FRESH_S:
            return snap
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._probe())
        if snap is not None and age is not None and age < MAX_STALE_S:
            return snap
        return await asyncio.shield(self._refresh)

    async def _probe(self) -> Snapshot:
        try:
            await asyncio.wait_for(self.broker.ping(), HEALTH_PROBE_TIMEOUT_S)
        except Exception as exc:
            log.info("broker does not answer", error=str(exc))
            return self._store(Snapshot(status="error", checked_at=time.time(),
                                        workers=self._merge({}, {}, online=False)))
        loop = asyncio.get_running_loop()
        try:
            stats, active = await asyncio.wait_for(
                loop.run_in_executor(self._pool, self._inspect), BROADCAST_TIMEOUT_S * 3)
        except Exception as exc:
            log.warning("celery inspect failed", error=str(exc))
            return self._store(Snapshot(status="error", checked_at=time.time(),
                                        workers=self._merge({}, {}, online=False)))
        workers = self._merge(stats, active, online=True)
        status: CeleryStatus = "connected" if any(w.online for w in workers) else "no_workers"
        if any(w.online and not w.queues for w in workers):
            # Queues rarely change: asked once per new worker, after the probe, never waited for.
            loop.run_in_executor(self._pool, self._ask_queues)
        return self._store(Snapshot(status=status, checked_at=time.time(), workers=workers))

    def _ask_queues(self) -> None:
        """The queues each worker consumes (`inspect active_queues`), kept until it is forgotten."""
        if self._app is None:
            return
        try:
            answer = _ask(self._app, "active_queues")
        except Exception as exc:
            log.info("celery active_queues failed", error=str(exc))
            return
        for name, items in answer.items():
            info = self._known.get(name)
            if info is not None and isinstance(items, list):
                info.queues = sorted(str(q["name"]) for q in items if isinstance(q, dict) and q.get("name"))

    def _inspect(self) -> tuple[dict[str, Any], dict[str, Any]]:
        if self._app is None:
            from squad.live.celery_config import make_celery

            self._app = make_celery(self.settings)
        return _broadcast(self._app)

    def _store(self, snap: Snapshot) -> Snapshot:
        self._snapshot = snap
        self._taken = time.monotonic()
        return snap

    def _merge(self, stats: dict[str, Any], active: dict[str, Any], *, online: bool) -> list[WorkerInfo]:
        """Workers that answered are online; ones seen before and silent now are offline."""
        now = time.time()
        answered = set(stats) | set(active)
        for name in answered:
            info = self._known.setdefault(name, WorkerInfo(name=name, online=True))
            info.online, info.last_seen = True, now
            st = stats.get(name) or {}
            total = st.get("total") or {}
            info.processed = int(total.get(EXECUTE_TASK_NAME, 0)) if isinstance(total, dict) else 0
            pool = st.get("pool") or {}
            conc = pool.get("max-concurrency") if isinstance(pool, dict) else None
            info.concurrency = int(conc) if isinstance(conc, int) else info.concurrency
            info.active_cards = [str(t["args"][0]) for t in active.get(name) or []
                                 if t.get("name") == EXECUTE_TASK_NAME and t.get("args")]
        if online:
            for name, info in self._known.items():
                if name not in answered:
                    info.online, info.active_cards = False, []
        else:
            for info in self._known.values():
                info.online, info.active_cards = False, []
        for name in [n for n, w in self._known.items() if not w.online and (w.last_seen or 0) < now - FORGET_S]:
            del self._known[name]
        return [replace(w, active_cards=list(w.active_cards), queues=list(w.queues))
                for w in sorted(self._known.values(), key=lambda w: w.name)]

    def close(self) -> None:
        """Stop the inspect pool without waiting for a hung broadcast."""
        if self._refresh is not None:
            self._refresh.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
