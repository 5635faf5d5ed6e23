"""`squad.team_pass`: the Celery task beat sends every few seconds (docs/team.md): add the cards
of due schedule ticks, queue the notifications new events call for, deliver those due.

Registered on the workers' app (`include` in `live/celery_config.py`); it runs on the maintenance
queue, never in a card's attempt. Each step is once-only across processes (schedule ticks and
outbox rows are keyed in the store; events reach one consumer of the group), so any number of
beats may send it.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import structlog
from celery.signals import worker_init

from squad.core.constants import TEAM_TASK_NAME
from squad.core.settings import Settings
from squad.live.events import EventBus, try_event_bus
from squad.store.card_store import CardStore
from squad.team.notify import collect, deliver_due, ensure_group
from squad.team.schedules import run_schedules
from squad.worker.app import celery_app

log = structlog.get_logger(__name__)
_state: dict[str, Any] = {}


def _resources() -> tuple[Settings, CardStore, EventBus | None]:
    if _state.get("pid") != os.getpid():
        settings: Settings = celery_app.squad_settings
        store = CardStore(settings.database_url)
        _state.clear()
        _state.update(pid=os.getpid(), settings=settings, store=store, events=None)
    if _state["events"] is None:
        s: Settings = _state["settings"]
        _state["events"] = try_event_bus(s.events, s.log_ttl, _state["store"].redis_keys)
    return _state["settings"], _state["store"], _state["events"]


@worker_init.connect
def _notify_group_before_any_card(**_: Any) -> None:
    """With `[[notify]]` set, the notification group exists before this worker runs a card, so the
    status events of cards that settle before the first team pass are delivered (notify.ensure_group)."""
    settings: Settings = celery_app.squad_settings
    if not settings.notify:
        return
    store = CardStore(settings.database_url)
    try:
        events = try_event_bus(settings.events, settings.log_ttl, store.redis_keys)
        if events is not None:
            ensure_group(events)
            events.close()
    except Exception as exc:  # the team pass creates it later all the same
        log.warning("notification group not created at start", error=repr(exc))
    finally:
        store.dispose()


@celery_app.task(name=TEAM_TASK_NAME, ignore_result=True)
def team_pass() -> dict[str, Any]:
    """One pass: schedules, then notifications (each step logs its own failure and the next runs)."""
    settings, store, events = _resources()
    added: list[str] = []
    counts: dict[str, int] = {}
    try:
        added = [r.card_id for r in run_schedules(settings, store, events) if r.card_id]
    except Exception as exc:  # one broken schedule must not stop notifications
        log.exception("schedule pass failed", error=repr(exc))
    if settings.notify:
        try:
            if events is not None:
                collect(settings, store, events, consumer=f"{socket.gethostname()}-{os.getpid()}")
            counts = deliver_due(settings, store)
        except Exception as exc:
            log.exception("notification pass failed", error=repr(exc))
    return {"scheduled": added, **counts}
