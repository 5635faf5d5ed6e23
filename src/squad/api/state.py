"""What one API process holds: settings, the store, bounded Redis clients, the socket hub.

Built once by `create_app`; routes reach it through the aliases of `deps.py`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import redis.asyncio as aioredis
import structlog

from squad.core.constants import HEALTH_PROBE_TIMEOUT_S
from squad.core.namespace import RedisKeys
from squad.core.settings import Settings
from squad.store.card_store import CardStore

if TYPE_CHECKING:
    from squad.api.metrics.prometheus import Exposition
    from squad.api.monitor import WorkerMonitor
    from squad.api.ws import EventHub
    from squad.orchestration.dispatch import Producer

log = structlog.get_logger(__name__)
T = TypeVar("T")
SHUTDOWN_STEP_TIMEOUT_S = 5.0


async def bounded_step(step: Awaitable[object], what: str) -> None:
    """Await one shutdown step for at most SHUTDOWN_STEP_TIMEOUT_S: shutdown must always end."""
    try:
        await asyncio.wait_for(step, SHUTDOWN_STEP_TIMEOUT_S)
    except Exception as exc:  # TimeoutError or the step's own failure: log it and go on closing
        log.warning("shutdown step did not finish cleanly", step=what, error=repr(exc))


class Producers:
    """A cached producer (it only enqueues) for retry and cancel.

    Rebuilt when the broker comes or goes, so a server started during a Redis outage recovers.
    """

    def __init__(self, settings: Settings, store: CardStore) -> None:
        self.settings, self.store = settings, store
        self._producer: Producer | None = None
        self._mode: str | None = None
        self._lock = threading.Lock()

    def get(self) -> Producer:
        """The producer for the current broker state (blocking: call from a thread)."""
        from squad.live.events import try_event_bus
        from squad.orchestration.dispatch import execution_mode, make_producer

        with self._lock:
            mode = execution_mode(self.settings)
            producer = self._producer
            if producer is None or self._mode != mode.name:
                if producer is not None:
                    producer.close()
                producer = make_producer(self.settings, self.store,
                                         try_event_bus(self.settings.events, self.settings.log_ttl,
                                                       self.store.redis_keys), mode)
                self._producer, self._mode = producer, mode.name
            elif producer.events is None:
                producer.events = try_event_bus(self.settings.events, self.settings.log_ttl, self.store.redis_keys)
            return producer

    def close(self) -> None:
        """Release the producer's connections."""
        with self._lock:
            if self._producer is not None:
                self._producer.close()
                self._producer = None


class Probe:
    """Runs blocking probes on a small private pool, bounded by a timeout.

    A hung database or broker never blocks the event loop or the route threadpool, and probes do
    not pile up: while one is still running, the next answers `None` at once.
    """

    def __init__(self, name: str, workers: int = 2) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"squad-{name}")
        self._busy: dict[str, asyncio.Future[object]] = {}

    async def run(self, key: str, fn: Callable[[], T], timeout_s: float = HEALTH_PROBE_TIMEOUT_S) -> T | None:
        """`fn()` in the pool; None on timeout, on error, or while the previous call hangs."""
        running = self._busy.get(key)
        if running is not None and not running.done():
            return None
        fut: asyncio.Future[T] = asyncio.get_running_loop().run_in_executor(self.pool, fn)
        self._busy[key] = fut  # type: ignore[assignment]
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout_s)
        except Exception:
            return None

    def close(self) -> None:
        """Stop the pool without waiting for a hung probe."""
        self.pool.shutdown(wait=False, cancel_futures=True)


async def bounded(aw: Awaitable[T], timeout_s: float = HEALTH_PROBE_TIMEOUT_S) -> T | None:
    """Await with a timeout; None on timeout or any error (for best-effort probes)."""
    try:
        return await asyncio.wait_for(aw, timeout_s)
    except Exception:
        return None


@dataclass
class AppState:
    """Everything one server process shares between requests."""

    settings: Settings
    store: CardStore
    events: aioredis.Redis
    results: aioredis.Redis
    broker: aioredis.Redis
    hub: EventHub
    monitor: WorkerMonitor
    producers: Producers
    probe: Probe = field(default_factory=lambda: Probe("probe"))
    exposition: Exposition = field(init=False)
    internal_errors: int = 0

    @property
    def keys(self) -> RedisKeys:
        """The store's Redis names (its instance id is read once, when the app is created)."""
        return self.store.redis_keys

    async def aclose(self) -> None:
        """Release connections (lifespan shutdown)."""
        await self.hub.stop()
        for client in (self.events, self.results, self.broker):
            await bounded_step(client.aclose(), "redis client")
        self.monitor.close()
        self.probe.close()
        await bounded_step(asyncio.to_thread(self.producers.close), "producers")
        self.store.dispose()
