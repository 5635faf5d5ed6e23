"""`squad status`: health of the database, Redis, Celery workers and the queue."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

from squad.core.constants import VERSION
from squad.core.masking import mask_text, mask_url
from squad.core.settings import Settings
from squad.live.celery_control import celery_workers
from squad.live.connections import REDIS_FULL_HINT

FULL_FRACTION = 0.98  # used/maxmemory from which writes are about to be refused


def redis_memory(client: redis.Redis) -> str:
    """`12.3 MiB used of 512.0 MiB`, or a line starting with FULL once writes are (about to be) refused."""
    try:
        info = client.info("memory")
    except redis.RedisError as exc:
        return f"unknown ({exc})"
    used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    mib = 1024 * 1024
    if not limit:
        return f"{used / mib:.1f} MiB used, no maxmemory (unbounded)"
    text = f"{used / mib:.1f} MiB used of {limit / mib:.1f} MiB ({info.get('maxmemory_policy', '?')})"
    if used >= limit * FULL_FRACTION:
        return f"FULL: {text}: {REDIS_FULL_HINT}"
    return text


def collect_status(settings: Settings) -> dict[str, Any]:
    """One dict with every probe's answer (never raises for a dead dependency).

    The database and the broker are probed side by side; a refused Redis connection is not retried
    (one probe, not a client riding out an outage) and the Celery ping ends once every registered
    worker answered.
    """
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="status") as pool:
        database = pool.submit(_probe_database, settings)
        broker = pool.submit(_probe_broker, settings)
        db_report = database.result()
        alive = db_report.pop("orchestrators")
        report: dict[str, Any] = {"version": VERSION, **db_report,
                                  "database_url": mask_url(settings.database_url), **broker.result()}
    from squad.live.presence import mode_in_use
    from squad.orchestration.mode import execution_mode

    # The mode the running orchestrators decided; with none, the one a producer would use now.
    report["execution_mode"] = (mode_in_use(alive) if alive is not None and alive else
                                execution_mode(settings, broker_ok=report["redis"] != "not_available").name)
    report["orchestrators"] = None if alive is None else [info.describe() for info in alive]
    return report


def _probe_database(settings: Settings) -> dict[str, Any]:
    """The store's counts, then (knowing its namespace) the orchestrators alive on its events Redis."""
    from squad.store.card_store import CardStore

    try:
        store = CardStore(settings.database_url)
        try:
            counts, keys = store.count_by_status(), store.redis_keys
        finally:
            store.dispose()
    except Exception as exc:
        return {"database": f"error: {mask_text(str(exc).splitlines()[0])}", "cards": {}, "orchestrators": None}
    return {"database": "connected", "cards": counts, "orchestrators": _probe_orchestrators(settings, keys)}


def _probe_orchestrators(settings: Settings, keys: Any) -> list[Any] | None:
    """The live orchestrators (None when the events Redis does not answer)."""
    from squad.live.connections import redis_client
    from squad.live.presence import live_orchestrators

    client = redis_client(settings.events, retries=0)
    try:
        return live_orchestrators(client, keys)
    except redis.RedisError:
        return None
    finally:
        client.close()


def _probe_broker(settings: Settings) -> dict[str, Any]:
    from squad.live.broker import BrokerView

    view = BrokerView(settings.broker, retries=0)
    try:
        redis_ok = view.ping()
        report: dict[str, Any] = {"redis": "connected" if redis_ok else "not_available",
                                  "broker_url": mask_url(settings.broker)}
        workers: list[str] | None = None
        if redis_ok:
            report["redis_memory"] = redis_memory(view.redis)
            if report["redis_memory"].startswith("FULL"):
                report["redis"] = "full"
            try:
                report["queue_depth"] = view.queue_depth(settings.cards_queue)
            except Exception:
                report["queue_depth"] = None
            try:
                registered: int | None = view.registered_workers()
            except redis.RedisError:
                registered = None
            workers = celery_workers(settings, expected=registered)
    finally:
        view.close()
    report["celery"] = ("not_available" if not redis_ok else "error" if workers is None
                        else "connected" if workers else "no_workers")
    report["celery_workers"] = workers or []
    return report
