"""Who runs a QUEUED card: the dispatchers and the Producer (the one "Celery or local" decision,
`execution_mode()`, is in `squad.orchestration.mode` and re-exported here).

Every process that queues cards (orchestrator, `squad retry`/`cancel`, `submit`, the API) goes
through a `Producer`: store transition first (a fresh task id), then the message, then the status
event — so a message can only ever claim a card already QUEUED under its own id. The dispatcher
behind it is chosen once, by `execution_mode()`, and used only through the `Dispatcher` protocol.
"""

from __future__ import annotations

import socket
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import structlog

from squad.attempt.run import AttemptContext, run_card
from squad.core.cards import Card
from squad.core.constants import CARDS_QUEUE, EXECUTE_TASK_NAME, STORE_HEADER
from squad.core.errors import BrokerUnavailable
from squad.core.settings import LimitedCard, Settings
from squad.core.statuses import Status
from squad.live.events import EventBus, status_event
from squad.orchestration.mode import (
    MODES as MODES,  # re-exported: the one "Celery or local" decision lives in squad.orchestration.mode
)
from squad.orchestration.mode import ExecutionMode as ExecutionMode
from squad.orchestration.mode import broker_answers as broker_answers
from squad.orchestration.mode import execution_mode as execution_mode
from squad.store.card_store import CardStore, QueuedCard

if TYPE_CHECKING:
    from celery import Celery

log = structlog.get_logger(__name__)
DISPATCH_BATCH = 500  # messages per pipelined broker round trip
#: Celery's own limits sit above the attempt's hard limit: the attempt ends its agent itself first.
CELERY_SOFT_MARGIN_S = 30
CELERY_HARD_MARGIN_S = 60


class Dispatch(NamedTuple):
    """One message to send: the card, its task id, priority, limits and queue."""

    card_id: str
    task_id: str
    priority: int
    soft_limit: float
    hard_limit: float
    queue: str = CARDS_QUEUE


class Dispatcher(Protocol):
    """Hands a QUEUED card to something that will run it."""

    mode: str  # "celery", "local" or "deferred"
    runs_agents: bool  # attempts run in this process (its agents die with it)
    settled: threading.Event | None  # set when an attempt of this process ends (local only)

    def dispatch(self, card_id: str, task_id: str, priority: int, soft_limit: float, hard_limit: float,
                 queue: str = CARDS_QUEUE) -> None:
        """Send or start the card's attempt for `task_id`."""

    def dispatch_many(self, items: list[Dispatch], sent: list[str]) -> None:
        """Send or start many attempts; `sent` gets each task id once it is out (on an error, the
        ones before it are)."""

    def revoke(self, task_id: str) -> None:
        """Drop a message still waiting (a running attempt is ended through its claim)."""

    def live_task_ids(self, task_ids: list[str], *, held_for_s: float | None = None) -> set[str]:
        """Which task ids are still waiting or running; with `held_for_s`, a message delivered that
        long ago whose card was never claimed counts as gone (`BrokerView.live_task_ids`)."""

    def interrupt(self) -> None:
        """Ask attempts running in this process to end their agents now (they are retried)."""

    def close(self, *, abort: bool = False) -> None:
        """Release resources; local attempts are waited for, or with `abort` ended first."""


class CeleryDispatcher:
    """Sends `squad.execute_card_task` messages to this store's cards queue (`cards` unless
    SQUAD_CARDS_QUEUE) or a squad's routed queue.

    With `store_id` (the store's instance id) every message carries it in the `squad_store` header:
    a worker of another store sharing the queue forwards the message to this store's own copy of the
    queue (`<queue>.<store id>`, which this store's workers consume) instead of taking it
    (`squad.worker.tasks`); a message is alive in either.
    """

    mode = "celery"
    runs_agents = False
    settled: threading.Event | None = None

    def __init__(self, settings: Settings, app: Celery | None = None, *, store_id: str | None = None) -> None:
        from squad.live.broker import BrokerView
        from squad.live.celery_config import make_celery, store_queue

        self.app = app or make_celery(settings)
        self.ask_timeout = settings.ask_timeout
        self.broker = BrokerView(settings.broker)
        queues = {settings.cards_queue, *settings.routes.values()}
        copies = {store_queue(queue, store_id) for queue in queues} if store_id else set()
        self.queues = sorted(queues | copies)
        self.headers = {STORE_HEADER: store_id} if store_id else None
        if app is None:
            # An app of our own only sends: it never waits on a result, yet Celery's Redis backend
            # would SUBSCRIBE to each sent task's result channel (and UNSUBSCRIBE when the
            # AsyncResult is collected): two round trips per card for nothing.
            self.app.backend.on_task_call = lambda _producer, _task_id: None

    def dispatch(self, card_id: str, task_id: str, priority: int, soft_limit: float, hard_limit: float,
                 queue: str = CARDS_QUEUE, producer: Any = None, declared: bool = False) -> None:
        from squad.live.celery_config import card_priority

        extra: dict[str, Any] = {"declare": []} if declared else {}
        if self.headers:
            extra["headers"] = self.headers
        # Celery's own limits cannot pause while the agent waits for a person (`ask_human`): they
        # leave room for the attempt's whole answer budget (docs/agents.md).
        waits = self.ask_timeout
        self.app.send_task(EXECUTE_TASK_NAME, args=[card_id], task_id=task_id, queue=queue,
                           priority=card_priority(priority), producer=producer,
                           soft_time_limit=hard_limit + waits + CELERY_SOFT_MARGIN_S,
                           time_limit=hard_limit + waits + CELERY_HARD_MARGIN_S, **extra)

    def dispatch_many(self, items: list[Dispatch], sent: list[str]) -> None:
        """Send many messages in pipelined batches (kombu's `Producer.batch`, one round trip per
        DISPATCH_BATCH messages); `sent` gets the task ids of each batch once it is flushed."""
        declared: set[str] = set()  # queues this producer declared (Celery would check each send)
        with self.app.producer_or_acquire() as producer:
            for start in range(0, len(items), DISPATCH_BATCH):
                chunk = items[start:start + DISPATCH_BATCH]
                with producer.batch(max_size=DISPATCH_BATCH * 4):
                    for card_id, task_id, priority, soft, hard, queue in chunk:
                        self.dispatch(card_id, task_id, priority, soft, hard, queue=queue, producer=producer,
                                      declared=queue in declared)
                        declared.add(queue)
                sent.extend(task_id for _cid, task_id, *_rest in chunk)

    def live_task_ids(self, task_ids: list[str], *, held_for_s: float | None = None) -> set[str]:
        return self.broker.live_task_ids(task_ids, self.queues, held_for_s=held_for_s)

    def revoke(self, task_id: str) -> None:
        try:
            self.app.control.revoke(task_id)
        except Exception as exc:  # revoke is an optimisation: the claim already makes it a no-op
            log.warning("revoke failed", task_id=task_id, error=str(exc))

    def interrupt(self) -> None:
        return None

    def close(self, *, abort: bool = False) -> None:
        self.broker.close()


class LocalDispatcher:
    """Runs attempts in this process's threads (no broker)."""

    mode = "local"
    runs_agents = True

    def __init__(self, settings: Settings, store: CardStore, events: EventBus | None, concurrency: int) -> None:
        self.shutdown = threading.Event()
        self.ctx = AttemptContext(settings=settings, store=store, events=events,
                                  worker=f"local@{socket.gethostname()}", shutdown=self.shutdown)
        # Each thread lives as long as its attempts, so the agent's parent-death signal is safe.
        self.pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="squad-local")
        self.running: dict[str, Future[Any]] = {}
        self.lock = threading.Lock()
        self.settled: threading.Event | None = threading.Event()

    def dispatch(self, card_id: str, task_id: str, priority: int, soft_limit: float, hard_limit: float,
                 queue: str = CARDS_QUEUE) -> None:
        fut = self.pool.submit(self._run, card_id, task_id)
        with self.lock:
            self.running[task_id] = fut

    def dispatch_many(self, items: list[Dispatch], sent: list[str]) -> None:
        for item in items:
            self.dispatch(*item)
            sent.append(item.task_id)

    def _run(self, card_id: str, task_id: str) -> None:
        try:
            run_card(self.ctx, card_id, task_id)
        except Exception:
            log.exception("local attempt crashed", card_id=card_id)
        finally:
            with self.lock:
                self.running.pop(task_id, None)
            if self.settled is not None:
                self.settled.set()  # the orchestrator reacts at once

    def live_task_ids(self, task_ids: list[str], *, held_for_s: float | None = None) -> set[str]:
        with self.lock:
            return {t for t in task_ids if t in self.running}

    def revoke(self, task_id: str) -> None:
        return None  # nothing waits in a broker; a running attempt sees its claim vanish

    def interrupt(self) -> None:
        self.shutdown.set()

    def close(self, *, abort: bool = False) -> None:
        if abort:
            self.shutdown.set()
        self.pool.shutdown(wait=True, cancel_futures=abort)


class DeferredDispatcher:
    """Local mode seen from another process (CLI, API): a QUEUED card is adopted by the running
    local orchestrator, which runs every QUEUED card that no one in its process holds."""

    mode = "deferred"
    runs_agents = False
    settled: threading.Event | None = None

    def dispatch(self, card_id: str, task_id: str, priority: int, soft_limit: float, hard_limit: float,
                 queue: str = CARDS_QUEUE) -> None:
        log.info("card queued for the local orchestrator", card_id=card_id, task_id=task_id)

    def dispatch_many(self, items: list[Dispatch], sent: list[str]) -> None:
        for item in items:
            self.dispatch(*item)
            sent.append(item.task_id)

    def live_task_ids(self, task_ids: list[str], *, held_for_s: float | None = None) -> set[str]:
        return set(task_ids)

    def revoke(self, task_id: str) -> None:
        return None

    def interrupt(self) -> None:
        return None

    def close(self, *, abort: bool = False) -> None:
        return None


def new_task_id() -> str:
    """A fresh message id."""
    return str(uuid.uuid4())


# ---- the producer -------------------------------------------------------------------------------
class Producer:
    """Queues cards and tells the world: store transition, message, status event."""

    def __init__(self, settings: Settings, store: CardStore, dispatcher: Dispatcher,
                 events: EventBus | None = None, *, session: str = "default") -> None:
        self.settings, self.store, self.dispatcher, self.events = settings, store, dispatcher, events
        self.session = session

    def send(self, card_id: str, *, expected: list[Status], fresh_retries: bool = False) -> str | None:
        """Move the card to QUEUED under a new task id and dispatch it; None when its status was not
        one of `expected`. `fresh_retries` (a user's retry) restarts the automatic-retry budget."""
        card = self.store.get_card(card_id)  # an unknown card is a NotFoundError, not a silent None
        task_id = new_task_id()
        if not self.store.enqueue(card_id, task_id, expected=expected, session=self.session,
                                  fresh_retries=fresh_retries):
            return None
        try:
            self._dispatch(card, task_id)
        except Exception as exc:
            self.store.unqueue(card_id, task_id)
            raise BrokerUnavailable(f"cannot enqueue card {card_id}: {exc}") from exc
        self.status_event(card_id, Status.QUEUED, task_id)
        return task_id

    def send_many(self, queued: list[QueuedCard]) -> list[str]:
        """Dispatch cards the store just moved to QUEUED (`CardStore.enqueue_many`): their QUEUED
        events in one pipeline (the store says QUEUED now: said before a worker says IN_PROGRESS),
        then the messages in batches. A send that fails puts the unsent cards back to TODO and raises
        BrokerUnavailable. Returns the ids of the cards sent."""
        items = [self._item(q, q.card_id, q.task_id, q.priority, q.squad) for q in queued]
        if self.events is not None and items:
            self.events.publish_many([status_event(i.card_id, Status.QUEUED, i.task_id) for i in items])
        sent: list[str] = []
        try:
            self.dispatcher.dispatch_many(items, sent)
        except Exception as exc:
            for item in items[len(sent):]:
                if self.store.unqueue(item.card_id, item.task_id):
                    self.status_event(item.card_id, Status.TODO, item.task_id)
            failed = items[min(len(sent), len(items) - 1)].card_id
            raise BrokerUnavailable(f"cannot enqueue card {failed}: {exc}") from exc
        for item in items:  # the same line as `send` writes
            log.info("card enqueued", card_id=item.card_id, task_id=item.task_id, queue=item.queue,
                     mode=self.dispatcher.mode)
        return [item.card_id for item in items]

    def resend(self, card_id: str, old_task_id: str) -> bool:
        """Send a QUEUED card again under a new id (its message was lost): the old id can no longer claim."""
        new_id = new_task_id()
        if not self.store.replace_task(card_id, old_task_id, new_id):
            return False
        self._dispatch(self.store.get_card(card_id), new_id)
        return True

    def _item(self, limited: LimitedCard, card_id: str, task_id: str, priority: int, squad: str | None) -> Dispatch:
        """The message of one card: its limits as `Settings.limits_for` resolves them, its squad's queue."""
        own = self.settings.limits_for(limited)
        queue = self.settings.routes.get(squad or "", self.settings.cards_queue)  # squad.toml [routes]: squad -> queue
        return Dispatch(card_id, task_id, priority, own.soft_time_limit_s, own.time_limit_s, queue)

    def _dispatch(self, card: Card, task_id: str) -> None:
        item = self._item(card, card.card_id, task_id, card.priority, card.squad)
        self.dispatcher.dispatch(*item)
        log.info("card enqueued", card_id=item.card_id, task_id=task_id, queue=item.queue, mode=self.dispatcher.mode)

    def revoke(self, task_id: str | None) -> None:
        """Drop the card's message if it still waits somewhere."""
        if task_id:
            self.dispatcher.revoke(task_id)

    def status_event(self, card_id: str, status: Status, task_id: str | None = None, *,
                     attempt: int | None = None) -> None:
        """Publish a status change (best effort: without Redis there is nobody to tell)."""
        if self.events is not None:
            self.events.publish(status_event(card_id, status, task_id, attempt=attempt))

    def close(self, *, abort: bool = False) -> None:
        """Release the dispatcher and the event connection."""
        self.dispatcher.close(abort=abort)
        if self.events is not None:
            self.events.close()


def make_producer(settings: Settings, store: CardStore, events: EventBus | None,
                  mode: ExecutionMode | None = None) -> Producer:
    """A producer for one-off operations (retry, cancel, submit): it never runs cards itself."""
    mode = mode or execution_mode(settings)
    dispatcher: Dispatcher = (CeleryDispatcher(settings, store_id=store.instance_id) if mode.name == "celery"
                              else DeferredDispatcher())
    return Producer(settings, store, dispatcher, events)
