"""The Celery app's configuration: `make_celery(settings)` (the app instance itself is `squad.celery_app`).

Settings come from the same Settings object as everything else. The visibility timeout is above
the hard time limit, or Redis would hand a running card to a second worker.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging
from kombu import Queue

from squad.core.constants import (
    CLEANUP_INTERVAL_S,
    CLEANUP_TASK_NAME,
    EXECUTE_TASK_NAME,
    PRIORITY_STEPS,
    RECONCILE_INTERVAL_S,
    RECONCILE_TASK_NAME,
    REDIS_CONNECT_TIMEOUT_S,
    REDIS_SOCKET_TIMEOUT_S,
    RESULT_EXPIRES_S,
    TEAM_INTERVAL_S,
    TEAM_TASK_NAME,
    WORKER_MAX_MEMORY_KIB,
)
from squad.core.settings import Settings


def make_celery(settings: Settings) -> Celery:
    """Build the Celery app from Settings."""
    app = Celery("squad", broker=settings.broker, backend=settings.results,
                 include=["squad.worker.tasks", "squad.team.tasks"])
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_compression="gzip",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Recycle a pool process by memory, not by task count: max_tasks_per_child=50 halved the
        # throughput of short cards (a fork + imports every 50 tasks, with stalls).
        worker_max_memory_per_child=WORKER_MAX_MEMORY_KIB,
        # Off unless SQUAD_TASK_EVENTS: publishing them was half of the worker main process's CPU for a
        # short card (a fanout PUBLISH per event). Flower sends `enable_events` to every worker itself.
        worker_send_task_events=settings.task_events,
        task_send_sent_event=settings.task_events,
        # No STARTED write per task: the API derives STARTED/PROGRESS from the store's claim.
        task_track_started=False,
        # `cards` and `maintenance` unless this store has queues of its own (SQUAD_CARDS_QUEUE, ...)
        task_default_queue=settings.cards_queue,
        task_queues=[Queue(settings.cards_queue), Queue(settings.maintenance_queue)],
        task_routes={EXECUTE_TASK_NAME: {"queue": settings.cards_queue},
                     CLEANUP_TASK_NAME: {"queue": settings.maintenance_queue},
                     RECONCILE_TASK_NAME: {"queue": settings.maintenance_queue},
                     TEAM_TASK_NAME: {"queue": settings.maintenance_queue}},
        # Backstops only: the runner enforces the card's own soft/hard limits first.
        task_soft_time_limit=settings.time_limit + 30,
        task_time_limit=settings.time_limit + 60,
        result_expires=RESULT_EXPIRES_S,
        result_backend_always_retry=True,
        result_backend_max_retries=20,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options={
            # Must exceed the hard limit: Redis redelivers any unacked message older than this.
            "visibility_timeout": settings.visibility_timeout_s,
            "queue_order_strategy": "priority",
            "priority_steps": PRIORITY_STEPS,
            "sep": ":",
            "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
            "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
            "health_check_interval": 15,
        },
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        redis_socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        redis_socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
        redis_retry_on_timeout=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        beat_schedule={
            "squad-reconcile": {"task": RECONCILE_TASK_NAME, "schedule": RECONCILE_INTERVAL_S,
                                "options": {"queue": settings.maintenance_queue,
                                            "expires": RECONCILE_INTERVAL_S * 2}},
            # schedules and notifications (docs/team.md); several beats may send it: every step is once-only
            "squad-team": {"task": TEAM_TASK_NAME, "schedule": TEAM_INTERVAL_S,
                           "options": {"queue": settings.maintenance_queue, "expires": TEAM_INTERVAL_S * 2}},
            "squad-cleanup": {"task": CLEANUP_TASK_NAME, "schedule": CLEANUP_INTERVAL_S,
                              "options": {"queue": settings.maintenance_queue}},
        },
    )
    app.squad_settings = settings
    return app


@setup_logging.connect
def _structured_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Celery worker and beat log through squad's structured handler (JSON when not on a terminal)."""
    from squad.core.logconfig import configure_logging

    configure_logging(loglevel or "INFO")


def store_queue(queue: str, instance_id: str) -> str:
    """A store's own copy of a queue, `<queue>.<instance id>`: `squad up`'s queues (`cards.<id>`), and
    where a worker of another store sharing `queue` forwards that store's messages."""
    return f"{queue}.{instance_id}"


def card_priority(priority: int) -> int:
    """Redis serves priority 0 first; card priority 9 must run first."""
    return 9 - max(0, min(9, priority))
