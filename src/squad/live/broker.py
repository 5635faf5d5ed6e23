"""What kombu's Redis transport keeps in the broker DB: queue depth and whether a message lives.

kombu stores a priority queue `cards` as lists `cards` (priority 0) and `cards:<n>` (sep ':'),
every delivered-but-unacked message in the hash `unacked`, and when it was delivered in the sorted
set `unacked_index`. A card's message is alive when its task id is in one of those (a delivered one,
for the reconciler, only for a while: `live_task_ids`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from squad.core.constants import CARDS_QUEUE, KOMBU_UNACKED_INDEX_KEY, KOMBU_UNACKED_KEY, PRIORITY_STEPS

# redis-py is imported by `BrokerView`, not here: `squad status` reads the key names below without it

#: kombu's set of the queues bound to Celery's control (pidbox) exchange: one per worker.
PIDBOX_BINDINGS_KEY = "_kombu.binding.celery.pidbox"


def queue_keys(queue: str = CARDS_QUEUE) -> list[str]:
    """The Redis lists behind one priority queue."""
    return [queue if step == 0 else f"{queue}:{step}" for step in PRIORITY_STEPS]


class BrokerView:
    """Read-only look into the broker DB."""

    def __init__(self, broker_url: str, **client_options: Any) -> None:
        from squad.live.connections import redis_client

        self.redis = redis_client(broker_url, **client_options)

    def ping(self) -> bool:
        """True when the broker answers."""
        import redis

        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False

    def queue_depth(self, queue: str = CARDS_QUEUE) -> int:
        """Messages waiting in a queue (all priorities)."""
        with self.redis.pipeline(transaction=False) as pipe:
            for key in queue_keys(queue):
                pipe.llen(key)
            return int(sum(pipe.execute()))

    def registered_workers(self) -> int:
        """How many Celery workers have their control queue bound: each running worker binds one
        (a worker that stops unbinds it; one that was killed stays counted until kombu expires it)."""
        return int(self.redis.scard(PIDBOX_BINDINGS_KEY))

    def live_task_ids(self, task_ids: Iterable[str], queues: Iterable[str] = (CARDS_QUEUE,), *,
                      held_for_s: float | None = None) -> set[str]:
        """Which of `task_ids` still have a message waiting (in any of `queues`) or delivered-but-unacked.

        With `held_for_s`, a delivered message counts only if it was delivered less than that long
        ago. The reconciler asks about cards still QUEUED, never claimed: a worker claims its card as
        soon as the message arrives, so a message held that long belongs to a consumer that died
        between taking it and claiming (Celery's `Unrecoverable error` when Redis goes away), and
        kombu gives it back only after the visibility timeout (time_limit + 600 s by default): the
        card would wait that long (docs/architecture.md "Surviving Redis faults").
        """
        wanted = set(task_ids)
        if not wanted:
            return set()
        with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                for key in queue_keys(queue):
                    pipe.lrange(key, 0, -1)
            pipe.hgetall(KOMBU_UNACKED_KEY)
            pipe.zrange(KOMBU_UNACKED_INDEX_KEY, 0, -1, withscores=True)
            *waiting, unacked, delivered = pipe.execute()
        found = {task_id for payloads in waiting for task_id in map(_task_id_of, payloads) if task_id in wanted}
        since = dict(delivered)
        now = time.time()
        for tag, payload in unacked.items():
            at = since.get(tag)
            if held_for_s is not None and at is not None and now - float(at) >= held_for_s:
                continue  # held too long by a consumer that never claimed its card
            task_id = _task_id_of(payload)
            if task_id in wanted:
                found.add(task_id)
        return found

    def close(self) -> None:
        """Release the connection pool."""
        self.redis.close()


def _task_id_of(payload: str) -> str | None:
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if isinstance(data, list):  # unacked entries are [message, exchange, routing_key]
        data = data[0] if data else {}
    if not isinstance(data, dict):
        return None
    headers = data.get("headers") or {}
    task_id = headers.get("id") or (data.get("properties") or {}).get("correlation_id")
    return str(task_id) if task_id else None
