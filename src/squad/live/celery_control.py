"""Asking the Celery workers: who is registered, who answers a ping, who consumes `cards`.

Each probe is one Celery broadcast (or one look into the broker) and ends as soon as every
registered worker answered, so a caller waiting on it (`squad status`, `orchestrate --wait`, the
mode decision) waits for the workers, not for a fixed timeout. None means the broker cannot be asked.

Every broadcast runs on a connection of its own, closed after it (`probe_connection`), never on one
from kombu's process-wide pool: a pooled connection outlives a Redis restart, and the next broadcast
of the process (the API's, `orchestrate --wait`'s) read its replies from the old server's socket and
failed with "Connection closed by server" (docs/architecture.md, "Surviving Redis faults").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from squad.core.constants import HEALTH_PROBE_TIMEOUT_S
from squad.core.masking import mask_url
from squad.core.settings import Settings

if TYPE_CHECKING:
    from celery import Celery
    from kombu import Connection

WORKER_PROBE_TIMEOUT_S = 2.0  # a Celery broadcast waits this long for every reply


@contextmanager
def probe_connection(app: Celery) -> Iterator[Connection]:
    """A broker connection for one broadcast (`connection=` of `app.control`), closed after it.

    Celery would take one from kombu's pools, which are per process and keyed by the broker URL, so
    they outlive the app: after Redis restarted on the same port, a pooled connection still held the
    socket its replies are read from (BRPOP), and the first broadcast on it failed.
    """
    with app.connection_for_write() as conn:
        yield conn


def registered_workers(settings: Settings) -> int | None:
    """How many workers are registered on the broker (None when it cannot be asked)."""
    from squad.live.broker import BrokerView

    view = BrokerView(settings.broker)
    try:
        return view.registered_workers()
    except Exception:
        return None
    finally:
        view.close()


def cards_consumers(settings: Settings, timeout_s: float = WORKER_PROBE_TIMEOUT_S) -> list[str] | None:
    """Names of the Celery workers consuming this store's cards queue (`cards` unless
    SQUAD_CARDS_QUEUE); None when the broker cannot be asked.

    The broadcast ends as soon as every worker registered on the broker answered (as `squad status`'s
    ping does) instead of always waiting `timeout_s`: `orchestrate --wait` asks from its loop, and a
    2 s wait there held up the release of the first dependants (chain benchmark: one 2 s hop).
    """
    expected = registered_workers(settings)
    if expected == 0:
        return []
    from squad.live.celery_config import make_celery

    app = make_celery(settings)
    try:
        with probe_connection(app) as conn:
            replies = app.control.inspect(timeout=timeout_s, limit=expected, connection=conn).active_queues() or {}
    except Exception:
        return None
    finally:
        app.close()
    return sorted(name for name, queues in replies.items()
                  if any(isinstance(q, dict) and q.get("name") == settings.cards_queue for q in queues or []))


def no_consumer_reason(settings: Settings) -> str | None:
    """Why celery mode cannot run cards now (no worker answered), or None when one consumes `cards`."""
    consumers = cards_consumers(settings)
    if consumers:
        return None
    return (f"Redis answers at {mask_url(settings.broker)} but no worker is consuming `{settings.cards_queue}` "
            f"(none answered within {WORKER_PROBE_TIMEOUT_S:g} s)")


def celery_workers(settings: Settings, timeout_s: float = HEALTH_PROBE_TIMEOUT_S, *,
                   expected: int | None = None) -> list[str] | None:
    """Names of Celery workers answering a ping, or None when the broker is unreachable.

    `expected`: how many workers are registered on the broker (`BrokerView.registered_workers`).
    The ping then ends as soon as that many answered instead of always waiting `timeout_s`, and
    with none registered nothing could answer: no ping at all.
    """
    if expected == 0:
        return []
    from squad.live.celery_config import make_celery

    app = make_celery(settings)
    try:
        with probe_connection(app) as conn:
            replies = app.control.ping(timeout=timeout_s, limit=expected, connection=conn) or []
    except Exception:
        return None
    finally:
        app.close()
    return sorted(name for reply in replies for name in reply)
