"""Celery tasks: `squad.execute_card_task`, `squad.cleanup_old_results`, `squad.reconcile`."""

from __future__ import annotations

import gc
import os
import socket
import time
from typing import Any

import structlog
from celery import Task
from celery.exceptions import Ignore
from celery.signals import celeryd_after_setup, task_prerun, worker_before_create_process, worker_process_init

from squad.agents import egress, orphans
from squad.attempt.run import AttemptContext, run_card
from squad.core.constants import (
    CLEANUP_TASK_NAME,
    EXECUTE_TASK_NAME,
    PROGRESS_MIN_INTERVAL_S,
    RECONCILE_TASK_NAME,
    STORE_HEADER,
)
from squad.core.settings import Settings
from squad.live.celery_config import make_celery, store_queue
from squad.live.events import EventBus, try_event_bus
from squad.store.card_store import CardStore
from squad.worker.app import celery_app

log = structlog.get_logger(__name__)
STATE_MIN_INTERVAL_S = 0.25
STATE_FIRST_AFTER_S = 1.0  # attempt age before its first PROGRESS state write
_state: dict[str, Any] = {}


def _resources() -> tuple[Settings, CardStore, EventBus | None]:
    """Per-process store and event bus (created after fork, never shared across processes)."""
    if _state.get("pid") != os.getpid():
        settings: Settings = celery_app.squad_settings
        _state.clear()
        _state.update(pid=os.getpid(), settings=settings, store=CardStore(settings.database_url),
                      events=None, events_checked=0.0)
    if _state["events"] is None and time.monotonic() - _state["events_checked"] > 5:
        _state["events_checked"] = time.monotonic()
        s: Settings = _state["settings"]
        _state["events"] = try_event_bus(s.events, s.log_ttl, _state["store"].redis_keys)
    return _state["settings"], _state["store"], _state["events"]


@worker_before_create_process.connect
def _freeze_before_fork(**_: Any) -> None:
    """In the worker's main process, just before it forks a pool process: everything alive now goes to
    the collector's permanent generation, so the child's collections never write to those objects'
    pages (each write would copy a page the child shares with its parent: ~memory per slot)."""
    gc.collect()
    gc.freeze()


@worker_process_init.connect
def _reset_after_fork(**_: Any) -> None:
    _state.clear()
    # A pool process runs nothing but attempts: anything it adopts was left by one of its agents.
    orphans.own_all_orphans()
    egress.remove_leftovers()  # a pool process killed while its proxy served (this one may replace it)


@task_prerun.connect
def _fresh_log_context(**_: Any) -> None:
    """Every task of a pool process starts with no bound log fields: an attempt binds its card's,
    and a team pass run next in the same process must not log as that card."""
    structlog.contextvars.clear_contextvars()


class ProgressReportingTask(Task):
    """Task base: `update_progress` sets Celery state PROGRESS (throttled; the attempt's reporter
    writes the `progress` events and the live log)."""

    _last_state = 0.0
    _last_step = ""

    def update_progress(self, progress: int, step: str, elapsed: float = 0.0, *, card_id: str = "") -> None:
        """Celery PROGRESS state (and the event, when called outside run_card)."""
        now = time.monotonic()
        since = now - self._last_state
        # Every step goes to the event stream; the Celery state (a result-backend write) follows
        # step changes at most 4 times a second and otherwise every PROGRESS_MIN_INTERVAL_S. A short
        # attempt writes none: nothing before STATE_FIRST_AFTER_S, and 100 % is followed by SUCCESS.
        if progress >= 100 or elapsed < STATE_FIRST_AFTER_S:
            return
        if since < (STATE_MIN_INTERVAL_S if step != self._last_step else PROGRESS_MIN_INTERVAL_S):
            return
        self._last_state, self._last_step = now, step
        meta = {"card_id": card_id or (self.request.args or [""])[0], "progress": progress,
                "current_step": step, "elapsed": elapsed, "worker": self.request.hostname,
                "retries": self.request.retries}
        try:
            # Not `update_state`: with result_backend_always_retry it would retry for as long as a Redis
            # outage lasts, freezing the attempt (limits, cancel, output) in the middle of its run.
            backend = self.backend
            backend._store_result(self.request.id, backend.encode_result(meta, "PROGRESS"), "PROGRESS",
                                  request=self.request)
        except Exception as exc:  # result backend down: progress is best effort
            log.warning("PROGRESS state not stored", error=str(exc))


@celery_app.task(bind=True, base=ProgressReportingTask, name=EXECUTE_TASK_NAME, acks_late=True)
def execute_card_task(self: ProgressReportingTask, card_id: str) -> dict[str, Any]:
    """Claim the card for this message and run one attempt; a message that cannot claim does nothing.

    A message of another store (two stores sharing one queue on one Redis) is forwarded to it.
    """
    settings, store, events = _resources()
    worker = self.request.hostname or socket.gethostname()
    # Every log line of this attempt carries these (run_card adds `attempt` once it has claimed).
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(card_id=card_id, task_id=self.request.id, worker=worker)
    sender = self.request.get(STORE_HEADER)
    if sender and sender != store.instance_id:
        _forward(self, str(sender), store.instance_id)
    self._last_step = ""

    def on_progress(progress: int, step: str, elapsed: float) -> None:
        self.update_progress(progress, step, elapsed, card_id=card_id)
    ctx = AttemptContext(settings=settings, store=store, events=events, worker=worker, on_progress=on_progress)
    new = run_card(ctx, card_id, self.request.id)
    log.info("attempt ended" if new is not None else "message did not claim the card",
             status=new.value if new else None)
    return {"card_id": card_id, "status": new.value if new else None, "claimed": new is not None}


def _forward(task: Task, sender: str, ours: str) -> None:
    """Hand a message of another store to that store's own copy of its queue, as sent (same task id,
    arguments, header, limits and priority), then acknowledge it here without a result (`Ignore`).

    Putting it back on the shared queue instead (`Reject(requeue=True)`) livelocked when the workers
    of both stores held each other's messages: each took back the very message it had just put
    back. A copy (`<queue>.<store id>`) is consumed only by that store's workers
    (`_consume_own_copies`), so this is one hop. The message never claims here (claims need the
    card's task id, which only its store knows). Said once per process and store: the fix is a
    queue per store (docs/operations.md "Queues per store").
    """
    request = task.request
    delivery = request.delivery_info or {}
    queue = str(delivery.get("routing_key") or _state["settings"].cards_queue)
    target = queue if queue.endswith(f".{sender}") else store_queue(queue, sender)
    hard, soft = request.timelimit or (None, None)
    if "forwarder" not in _state:  # sends only: never subscribes to the results of what it sends
        forwarder = make_celery(_state["settings"])
        forwarder.backend.on_task_call = lambda _producer, _task_id: None
        _state["forwarder"] = forwarder
    _state["forwarder"].send_task(EXECUTE_TASK_NAME, args=list(request.args or []), task_id=request.id,
                                  queue=target, priority=delivery.get("priority"), headers={STORE_HEADER: sender},
                                  time_limit=hard, soft_time_limit=soft)
    seen: set[str] = _state.setdefault("foreign", set())
    if sender not in seen:
        seen.add(sender)
        log.warning("message of another store forwarded to that store's own queue; give each store its own "
                    "SQUAD_CARDS_QUEUE (docs/operations.md, Queues per store)",
                    queue=queue, forwarded_to=target, message_store=sender, worker_store=ours)
    raise Ignore()


@celeryd_after_setup.connect
def _consume_own_copies(sender: str, instance: Any, **_: Any) -> None:
    """In the worker's main process, once `-Q` is applied: every queue it consumes, it also consumes
    in this store's own copy (`cards` -> `cards.<instance id>`), where workers of other stores
    sharing a queue forward this store's messages (`_forward`). The stock `celery -A squad.celery_app
    worker -Q cards,maintenance` gets them too."""
    settings: Settings = instance.app.squad_settings
    store = CardStore(settings.database_url)
    try:
        instance_id = store.instance_id
    finally:
        store.dispose()  # before the pool forks: the pool processes open their own
    orphans.hide_environment()  # the parent of the pool processes, so an ancestor of every agent
    queues = instance.app.amqp.queues
    for name in list(queues.consume_from):
        if not name.endswith(f".{instance_id}"):
            queues.select_add(store_queue(name, instance_id))


@celery_app.task(name=RECONCILE_TASK_NAME, ignore_result=True)
def reconcile() -> dict[str, list[str]]:
    """Sweep stale leases, queue due retries and re-send lost messages (never releases TODO cards)."""
    from squad.orchestration.dispatch import CeleryDispatcher
    from squad.orchestration.orchestrator import Orchestrator

    settings, store, events = _resources()
    if "dispatcher" not in _state:  # one per pool process, on the worker's own app (runs every 5 s)
        _state["dispatcher"] = CeleryDispatcher(settings, app=celery_app, store_id=store.instance_id)
    res = Orchestrator(settings, store, _state["dispatcher"], events).tick(release=False)
    return {"lost": res.lost, "retried": res.retried, "requeued": res.requeued}


@celery_app.task(name=CLEANUP_TASK_NAME, ignore_result=True)
def cleanup_old_results() -> dict[str, int]:
    """Expire old Celery results and trim the event stream; archived logs stay in the store."""
    settings, _store, events = _resources()
    celery_app.backend.cleanup()
    trimmed = 0
    if events is not None:
        min_id = f"{int((time.time() - settings.log_ttl) * 1000)}-0"
        trimmed = int(events.redis.xtrim(events.keys.task_updates, minid=min_id, approximate=True))
    return {"trimmed_events": trimmed}
