"""Ready-card selection, enqueueing by priority, retries when due, and the session loop.

The orchestrator is a producer: it never imports the worker. In celery mode it sends messages by
task name; in local mode a thread pool runs the same `run_card()` the Celery task runs.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from squad.attempt import AttemptContext, run_card, sweep_stale_leases
from squad.cards import Status
from squad.config import Settings, mask_url
from squad.constants import CARDS_QUEUE, EXECUTE_TASK_NAME
from squad.errors import BrokerUnavailable, SquadError
from squad.events import EventBus, try_event_bus
from squad.store import CardStore
from squad.waiting import EXIT_TIMEOUT, no_consumer_reason

if TYPE_CHECKING:
    from celery import Celery

log = structlog.get_logger(__name__)
WAKE_CHECK_S = 0.5  # longest block on the event stream before looking at the stop flag again
#: statuses after which a pass may have something to do (QUEUED/IN_PROGRESS never free a dependant)
SETTLED_STATUSES = frozenset({Status.DONE.value, Status.FAILED.value, Status.CANCELLED.value,
                              Status.RETRYING.value, Status.TODO.value})


class Dispatcher(Protocol):
    """Hands a QUEUED card to something that will run it."""

    mode: str

    def dispatch(self, card_id: str, task_id: str, priority: int, soft_limit: float, hard_limit: float) -> None:
        """Send or start the card's attempt for `task_id`."""

    def live_task_ids(self, task_ids: list[str]) -> set[str]:
        """Which task ids are still waiting or running."""

    def close(self) -> None:
        """Release resources (waits for local attempts)."""


class CeleryDispatcher:
    """Sends `squad.execute_card_task` messages to the `cards` queue."""

    mode = "celery"

    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        from squad.broker import BrokerView
        from squad.celery_app import make_celery

        self.app = app or make_celery(settings)
        self.broker = BrokerView(settings.broker)

    def dispatch(self, card_id: str, task_id: str, priority: int, soft_limit: float, hard_limit: float) -> None:
        from squad.celery_app import card_priority

        self.app.send_task(EXECUTE_TASK_NAME, args=[card_id], task_id=task_id, queue=CARDS_QUEUE,
                           priority=card_priority(priority),
                           soft_time_limit=hard_limit + 30, time_limit=hard_limit + 60)

    def live_task_ids(self, task_ids: list[str]) -> set[str]:
        return self.broker.live_task_ids(task_ids)

    def revoke(self, task_id: str) -> None:
        """Drop a message still waiting (a running attempt is ended through its claim)."""
        try:
            self.app.control.revoke(task_id)
        except Exception as exc:  # revoke is an optimisation: the claim already makes it a no-op
            log.warning("revoke failed", task_id=task_id, error=str(exc))

    def close(self) -> None:
        self.broker.close()


class LocalDispatcher:
    """Runs attempts in this process's threads (no broker)."""

    mode = "local"

    def __init__(self, settings: Settings, store: CardStore, events: EventBus | None, concurrency: int) -> None:
        self.shutdown = threading.Event()
        self.ctx = AttemptContext(settings=settings, store=store, events=events, worker=f"local@{_host()}",
                                  shutdown=self.shutdown)
        # Each thread lives as long as its attempts, so the agent's parent-death signal is safe.
        self.pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="squad-local")
        self.running: dict[str, Future[Any]] = {}
        self.lock = threading.Lock()
        self.settled = threading.Event()  # an attempt ended: the orchestrator reacts at once

    def dispatch(self, card_id: str, task_id: str, priority: int, soft_limit: float, hard_limit: float) -> None:
        fut = self.pool.submit(self._run, card_id, task_id)
        with self.lock:
            self.running[task_id] = fut

    def _run(self, card_id: str, task_id: str) -> None:
        try:
            run_card(self.ctx, card_id, task_id)
        except Exception:
            log.exception("local attempt crashed", card_id=card_id)
        finally:
            with self.lock:
                self.running.pop(task_id, None)
            self.settled.set()

    def live_task_ids(self, task_ids: list[str]) -> set[str]:
        with self.lock:
            return {t for t in task_ids if t in self.running}

    def busy(self) -> int:
        """Attempts waiting or running in this process."""
        with self.lock:
            return len(self.running)

    def close(self, *, abort: bool = False) -> None:
        """Wait for running attempts; with `abort`, end their agents first (they are retried)."""
        if abort:
            self.shutdown.set()
        self.pool.shutdown(wait=True, cancel_futures=abort)


def _host() -> str:
    import socket

    return socket.gethostname()


def new_task_id() -> str:
    """A fresh message id."""
    return str(uuid.uuid4())


@dataclass
class TickResult:
    """What one orchestrator pass did."""

    released: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)


class Orchestrator:
    """Moves ready cards into execution and keeps the store and the queue consistent."""

    def __init__(self, settings: Settings, store: CardStore, dispatcher: Dispatcher,
                 events: EventBus | None = None, *, session: str = "default",
                 max_in_flight: int | None = None) -> None:
        self.settings, self.store, self.dispatcher, self.events = settings, store, dispatcher, events
        self.session = session
        self.max_in_flight = max_in_flight
        self.stopping = threading.Event()
        self.fallback_reason: str | None = None  # why auto mode runs cards locally
        self._last_event_id = "$"  # where the wait for status events resumes

    # ---- one pass ---------------------------------------------------------------------------
    def tick(self, *, release: bool = True) -> TickResult:
        """One pass: block/unblock, sweep stale leases, retry due cards, requeue lost, release ready."""
        res = TickResult()
        graph = self.store.graph()  # one read of the dependency graph per pass
        blocked, unblocked = self.store.update_blocked(graph)
        res.blocked = blocked
        for cid in blocked:
            self._status_event(cid, Status.BLOCKED)
        for cid in unblocked:
            self._status_event(cid, Status.TODO)
        res.lost = sweep_stale_leases(self.settings, self.store, self.events)
        for card_id in self.store.due_retries():
            if self._send(card_id, expected=[Status.RETRYING]):
                res.retried.append(card_id)
        res.requeued = self.requeue_lost()
        if release:
            budget = None
            if self.max_in_flight is not None:
                budget = max(0, self.max_in_flight - self.store.in_flight())
            for card_id in self.store.ready_cards(limit=budget, graph=graph):
                if self._send(card_id, expected=[Status.TODO]):
                    res.released.append(card_id)
        return res

    def requeue_lost(self) -> list[str]:
        """QUEUED too long with no live message (e.g. Redis lost its data): send again."""
        after = self.settings.requeue_after
        if self.dispatcher.mode == "local":
            after = 0.0  # a local queue lives in this process: anything not ours is orphaned
        stale = [(cid, tid) for cid, tid in self.store.stale_queued(after) if tid]
        if not stale:
            return []
        alive = self.dispatcher.live_task_ids([tid for _cid, tid in stale])
        requeued: list[str] = []
        for card_id, task_id in stale:
            if task_id in alive:
                continue
            card = self.store.get_card(card_id)
            new_id = new_task_id()
            if self.store.replace_task(card_id, task_id, new_id):
                log.warning("re-enqueueing card whose message is gone", card_id=card_id, old_task_id=task_id)
                self._dispatch(card_id, new_id, card.priority, card.soft_time_limit, card.time_limit)
                requeued.append(card_id)
        return requeued

    def _send(self, card_id: str, *, expected: list[Status], fresh_retries: bool = False) -> bool:
        card = self.store.get_card(card_id)
        task_id = new_task_id()
        if not self.store.enqueue(card_id, task_id, expected=expected, session=self.session,
                                  fresh_retries=fresh_retries):
            return False
        try:
            self._dispatch(card_id, task_id, card.priority, card.soft_time_limit, card.time_limit)
        except Exception as exc:
            self.store.unqueue(card_id, task_id)
            raise BrokerUnavailable(f"cannot enqueue card {card_id}: {exc}") from exc
        self._status_event(card_id, Status.QUEUED, task_id)
        return True

    def _dispatch(self, card_id: str, task_id: str, priority: int, soft: float | None, hard: float | None) -> None:
        hard_s = hard or self.settings.time_limit
        soft_s = soft or self.settings.soft_time_limit
        self.dispatcher.dispatch(card_id, task_id, priority, soft_s, hard_s)

    def _status_event(self, card_id: str, status: Status, task_id: str | None = None) -> None:
        if self.events is not None:
            self.events.publish("status", card_id, task_id, status=status.value)

    def enqueue_now(self, card_id: str, *, expected: list[Status]) -> str | None:
        """Queue one card right away (a user's retry: fresh retry budget); returns the new task id."""
        if self._send(card_id, expected=expected, fresh_retries=True):
            return self.store.get_card(card_id).celery_task_id
        return None

    # ---- loop -------------------------------------------------------------------------------
    def run(self, *, once: bool = False, wait: bool = False, interval: float = 1.0, timeout: float | None = None,
            on_wait: Callable[[], None] | None = None) -> int:
        """Run passes until stopped; `--once` alone does one pass; with `--wait`, until settled, or
        `timeout` seconds (then `EXIT_TIMEOUT`); `on_wait` is called after each pass while waiting."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.stopping.is_set():
            try:
                self.tick()
            except Exception as exc:  # a Redis/broker or database blip must not end the loop
                if once and not wait:
                    raise
                log.warning("orchestrator pass failed; retrying next pass", error=f"{type(exc).__name__}: {exc}")
            if once and not wait:
                return 0
            if wait and self.store.active_count() == 0:
                counts = self.store.count_by_status()
                return 1 if counts[Status.FAILED] else 0
            if deadline is not None and time.monotonic() >= deadline:
                self.stop()  # local attempts still running are ended (and retried later)
                return EXIT_TIMEOUT
            if wait and on_wait is not None:
                on_wait()
            if deadline is not None:
                self.wait_for_change(max(0.0, min(interval, deadline - time.monotonic())))
            else:
                self.wait_for_change(interval)
        # Stopped by a signal before the cards settled: never report success for unfinished work.
        return 130 if wait else 0

    def stop(self) -> None:
        """Ask the loop to end after the current pass."""
        self.stopping.set()
        settled = getattr(self.dispatcher, "settled", None)
        if settled is not None:
            settled.set()

    def wait_for_change(self, interval: float) -> None:
        """Sleep until an attempt settles (react at once) or `interval` passes (the safety-net poll).

        Local mode: the executor's own signal. Celery mode: a status event on `task_updates` that a
        worker publishes after its `finish` transaction committed, so the next pass sees the change.
        """
        deadline = time.monotonic() + interval
        settled: threading.Event | None = getattr(self.dispatcher, "settled", None)
        if settled is not None:
            settled.wait(interval)
            settled.clear()
            return
        if self.events is None:
            self.stopping.wait(interval)
            return
        while not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                found, self._last_event_id = self.events.wait_status(
                    self._last_event_id, SETTLED_STATUSES, block_s=min(remaining, WAKE_CHECK_S))
            except Exception as exc:  # Redis blip: fall back to the poll
                log.warning("waiting for status events failed", error=f"{type(exc).__name__}: {exc}")
                self.stopping.wait(remaining)
                return
            if found:
                return


def broker_answers(settings: Settings) -> bool:
    """True when the Celery broker's Redis answers a PING."""
    from squad.broker import BrokerView

    view = BrokerView(settings.broker)
    try:
        return view.ping()
    finally:
        view.close()


def resolve_mode(settings: Settings, mode: str) -> str:
    """auto → celery when USE_CELERY and a broker answers, else local (with a warning)."""
    return choose_mode(settings, mode)[0]


def choose_mode(settings: Settings, mode: str) -> tuple[str, str | None]:
    """(mode, why auto mode fell back to local or None).

    auto → celery when USE_CELERY, a broker answers and a worker consumes `cards`; otherwise local,
    because cards sent to a queue nobody consumes would wait forever.
    """
    if mode == "local" or (mode == "auto" and not settings.use_celery):
        return "local", None
    if not broker_answers(settings):
        if mode == "celery":
            raise BrokerUnavailable(f"no Redis broker answers at {mask_url(settings.broker)}")
        log.info("no broker answers; falling back to local mode", broker=mask_url(settings.broker))
        return "local", f"no Redis broker answers at {mask_url(settings.broker)}"
    if mode == "celery":
        return "celery", None
    reason = no_consumer_reason(settings)
    return ("local", reason) if reason else ("celery", None)


def make_orchestrator(settings: Settings, store: CardStore, *, mode: str = "auto", session: str = "default",
                      max_in_flight: int | None = None) -> Orchestrator:
    """Build an orchestrator for a mode (auto|celery|local)."""
    if mode not in ("auto", "celery", "local"):
        raise SquadError(f"unknown mode {mode!r} (use auto, celery or local)")
    actual, reason = choose_mode(settings, mode)
    events = try_event_bus(settings.events, settings.log_ttl, store.redis_keys)
    dispatcher: Dispatcher
    if actual == "celery":
        dispatcher = CeleryDispatcher(settings)
    else:
        dispatcher = LocalDispatcher(settings, store, events, concurrency=max_in_flight or 4)
    orch = Orchestrator(settings, store, dispatcher, events, session=session, max_in_flight=max_in_flight)
    orch.fallback_reason = reason
    return orch


class DeferredDispatcher:
    """Local mode seen from another process (CLI, API): a QUEUED card is adopted by the running
    local orchestrator, which runs every QUEUED card that no one in its process holds."""

    mode = "deferred"

    def dispatch(self, card_id: str, task_id: str, priority: int, soft_limit: float, hard_limit: float) -> None:
        log.info("card queued for the local orchestrator", card_id=card_id, task_id=task_id)

    def live_task_ids(self, task_ids: list[str]) -> set[str]:
        return set(task_ids)

    def close(self) -> None:
        return None


def make_producer(settings: Settings, store: CardStore, events: EventBus | None) -> Orchestrator:
    """An orchestrator for one-off operations (retry from CLI/API): it never runs cards itself."""
    dispatcher: Dispatcher
    if settings.use_celery and broker_answers(settings):
        dispatcher = CeleryDispatcher(settings)
    else:
        dispatcher = DeferredDispatcher()
    return Orchestrator(settings, store, dispatcher, events)
