"""`squad status`: health of the database, Redis, Celery workers and the queue, in a fraction of a second.

It answers from what it can know cheaply, side by side and each probe bounded: an up-to-date
SQLite store is read without SQLAlchemy (`squad.store.peek`); a Redis whose port refuses a TCP
connection is `not_available` without importing redis-py (a third of the command's start-up);
Celery is imported only to ping workers the broker says are registered. Whatever has not answered
after `STATUS_BOUND_S` is reported as not answering (docs/benchmarks.md "CLI").
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from squad.core.constants import REDIS_FULL_HINT, VERSION
from squad.core.masking import mask_text, mask_url
from squad.core.settings import Settings

if TYPE_CHECKING:
    import redis

FULL_FRACTION = 0.98  # used/maxmemory from which writes are about to be refused
#: The longest `squad status` waits for its probes (each has shorter bounds of its own: a refused
#: connection answers at once, the Celery ping ends after 1 s, a locked SQLite file after 1 s)
STATUS_BOUND_S = 2.0
CONNECT_PROBE_S = 0.5  # the TCP (or Unix socket) connect that tells whether a Redis listens at all
#: How long `squad status` waits for a local SQLite store it must create or migrate (as every command
#: does): a change on the disk is never abandoned half-way at STATUS_BOUND_S, however busy the machine
LOCAL_CREATE_BOUND_S = 120.0


def redis_memory(client: redis.Redis) -> str:
    """`12.3 MiB used of 512.0 MiB`, or a line starting with FULL once writes are (about to be) refused."""
    import redis

    try:
        info = client.info("memory")
    except redis.RedisError as exc:
        return f"unknown ({exc})"
    return memory_line(info)


def memory_line(info: dict[str, Any]) -> str:
    """What `redis_memory` says of an `INFO memory` reply (as a dict of its fields)."""
    used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    mib = 1024 * 1024
    if not limit:
        return f"{used / mib:.1f} MiB used, no maxmemory (unbounded)"
    text = f"{used / mib:.1f} MiB used of {limit / mib:.1f} MiB ({info.get('maxmemory_policy', '?')})"
    if used >= limit * FULL_FRACTION:
        return f"FULL: {text}: {REDIS_FULL_HINT}"
    return text


def _info_fields(text: str) -> dict[str, str]:
    """`INFO`'s `field:value` lines as a dict (section headers and blank lines skipped)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def listens(url: str, timeout_s: float = CONNECT_PROBE_S) -> bool | None:
    """False when nothing accepts a connection at a Redis URL's address (refused, no such socket,
    no answer within `timeout_s`); True when something does; None when the URL does not say."""
    parts = urlsplit(url)
    try:
        if parts.scheme == "unix":
            if not os.path.exists(parts.path):
                return False
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout_s)
                sock.connect(parts.path)
            return True
        if parts.scheme in ("redis", "rediss") and parts.hostname:
            from squad.live.probe import connect_tcp

            with connect_tcp(parts.hostname, parts.port or 6379, timeout_s):
                return True
    except OSError:
        return False
    except ValueError:  # a port out of range
        return None
    return None


class ImportClock:
    """The seconds a probe spent importing modules (local work that cannot hang, however busy the
    machine): they do not count against its bound (a loaded machine imported redis-py and Celery in
    more than `STATUS_BOUND_S`, and a Redis that answered read 'no answer')."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spent = 0.0
        self._since: float | None = None

    @contextmanager
    def importing(self) -> Iterator[None]:
        with self._lock:
            self._since = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self._spent += time.monotonic() - (self._since or time.monotonic())
                self._since = None

    def spent(self) -> float:
        """Seconds spent importing so far, the import under way included."""
        with self._lock:
            return self._spent + (time.monotonic() - self._since if self._since is not None else 0.0)


def collect_status(settings: Settings, bound_s: float = STATUS_BOUND_S) -> dict[str, Any]:
    """One dict with every probe's answer (never raises for a dead dependency, never waits past
    `bound_s` of a probe's own waiting: a probe still running then is reported as not answering).

    The database and the broker are probed side by side, in daemon threads (one that hangs cannot
    hold the process); a refused Redis connection is not retried (one probe, not a client riding
    out an outage) and the Celery ping ends once every registered worker answered. Time a probe
    spends importing its client libraries is not counted (`ImportClock`), nor, up to
    LOCAL_CREATE_BOUND_S, creating a local SQLite store.
    """
    results: dict[str, Any] = {}
    probes: list[tuple[str, Callable[[Settings, dict[str, Any], ImportClock], None]]] = [
        ("database", _probe_database), ("broker", _probe_broker)]
    clocks = [ImportClock() for _ in probes]
    threads = [threading.Thread(target=probe, args=(settings, results, clock), name=f"status-{name}", daemon=True)
               for (name, probe), clock in zip(probes, clocks, strict=True)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread, clock in zip(threads, clocks, strict=True):
        while thread.is_alive():
            remaining = start + bound_s + min(clock.spent(), LOCAL_CREATE_BOUND_S) - time.monotonic()
            if remaining <= 0:
                break
            thread.join(min(remaining, 0.1))
    if threads[0].is_alive() and results.get("creating"):  # a local file being created: not a probe
        threads[0].join(LOCAL_CREATE_BOUND_S)
    silent = f"no answer within {bound_s:g} s"
    db_report = results.get("database") or {"database": silent, "cards": {}}
    broker_report = results.get("broker") or {"redis": silent, "broker_url": mask_url(settings.broker),
                                              "celery": "error", "celery_workers": []}
    alive = results.get("orchestrators")  # None: not known (no events Redis, or no answer in time)
    report: dict[str, Any] = {"version": VERSION, **db_report, "database_url": mask_url(settings.database_url),
                              **broker_report}
    if alive:  # the mode the running orchestrators decided (the newest one's)
        report["execution_mode"] = alive[0].mode
    else:  # with none running, the one a producer would use now
        from squad.orchestration.mode import execution_mode

        broker_ok = report["redis"] in ("connected", "full")
        report["execution_mode"] = execution_mode(settings, broker_ok=broker_ok).name
    report["orchestrators"] = None if alive is None else [info.describe() for info in alive]
    return report


def _probe_database(settings: Settings, results: dict[str, Any], clock: ImportClock) -> None:
    """The store's counts (`database`), then, knowing its namespace, the orchestrators alive on its
    events Redis (`orchestrators`): each goes into `results` as soon as it is known."""
    from squad.core.namespace import RedisKeys
    from squad.core.statuses import Status
    from squad.store.peek import peek

    try:
        seen = peek(settings.database_url)
        if seen is not None:  # a local store at head: read in milliseconds
            counts = {status.value: seen.counts.get(status.value, 0) for status in Status}
            keys = RedisKeys.for_instance(seen.instance_id)
            outbox, errors = seen.notifications, seen.notify_errors
        else:  # create or migrate it, as every command does
            with clock.importing():
                from squad.store.card_store import CardStore
                from squad.store.peek import sqlite_path
                from squad.store.team_store import TeamStore

            # a local file is waited for (creating it must not be cut off); another database is a probe
            results["creating"] = sqlite_path(settings.database_url) is not None

            store = CardStore(settings.database_url)
            try:
                counts, keys = store.count_by_status(), store.redis_keys
                team = TeamStore(store)
                outbox = team.outbox_counts()
                errors = [f"{r['target']}: {r['last_error']} ({r['card_id']})" for r in team.last_failures()]
            finally:
                store.dispose()
    except Exception as exc:
        results["database"] = {"database": f"error: {mask_text(str(exc).splitlines()[0])}", "cards": {}}
        return
    results["database"] = {"database": "connected", "cards": counts}
    if settings.notify or any(outbox.values()):  # [[notify]] deliveries (docs/team.md): failures show here
        results["database"]["notifications"] = {state: outbox.get(state, 0)
                                                for state in ("sent", "pending", "failing", "dropped")}
        results["database"]["notification_errors"] = errors
    results["orchestrators"] = _probe_orchestrators(settings, keys, clock)


def _probe_orchestrators(settings: Settings, keys: Any, clock: ImportClock) -> list[Any] | None:
    """The live orchestrators (None when the events Redis does not answer)."""
    if listens(settings.events) is False:
        return None
    from squad.live.presence import live_orchestrators
    from squad.live.probe import ProbeError, QuickRedis

    try:
        quick = QuickRedis.open(settings.events)
    except ProbeError:
        return None
    if quick is not None:  # a plain URL: no redis-py (docs/benchmarks.md, "`squad status` from what it knows")
        try:
            return live_orchestrators(quick, keys)
        except ProbeError:
            return None
        finally:
            quick.close()
    with clock.importing():
        import redis

        from squad.live.connections import redis_client

    client = redis_client(settings.events, retries=0)
    try:
        return live_orchestrators(client, keys)
    except redis.RedisError:
        return None
    finally:
        client.close()


def _probe_broker(settings: Settings, results: dict[str, Any], clock: ImportClock) -> None:
    """Redis (reachable, memory, queue depth) and the Celery workers (`broker`)."""
    report: dict[str, Any] = {"redis": "not_available", "broker_url": mask_url(settings.broker)}
    if listens(settings.broker) is False:  # nothing listens: no need for a Redis client at all
        results["broker"] = {**report, "celery": "not_available", "celery_workers": []}
        return
    from squad.live.probe import ProbeError, QuickRedis

    try:
        quick = QuickRedis.open(settings.broker)
    except ProbeError:
        results["broker"] = {**report, "celery": "not_available", "celery_workers": []}
        return
    if quick is None:  # a URL only the full client understands
        _probe_broker_with_redis_py(settings, report, clock)
        results["broker"] = report
        return
    from squad.live.broker import PIDBOX_BINDINGS_KEY, queue_keys

    try:
        lengths = queue_keys(settings.cards_queue)
        replies = quick.execute(("PING",), ("INFO", "memory"), *(("LLEN", key) for key in lengths),
                                ("SCARD", PIDBOX_BINDINGS_KEY))
    except ProbeError:
        replies = None
    finally:
        quick.close()
    workers: list[str] | None = None
    redis_ok = replies is not None and replies[0] == "PONG"
    if replies is not None and redis_ok:
        report["redis"] = "connected"
        info = replies[1]
        report["redis_memory"] = (f"unknown ({info})" if isinstance(info, Exception)
                                  else memory_line(_info_fields(info)))
        if report["redis_memory"].startswith("FULL"):
            report["redis"] = "full"
        depths = replies[2:2 + len(lengths)]
        report["queue_depth"] = (None if any(isinstance(d, Exception) for d in depths)
                                 else int(sum(int(d) for d in depths)))
        scard = replies[-1]
        registered = None if isinstance(scard, Exception) else int(scard)
        if registered != 0:  # Celery is imported to ping them: local work, outside the bound
            with clock.importing():
                import squad.live.celery_config  # noqa: F401
                from squad.live.celery_control import celery_workers
            workers = celery_workers(settings, expected=registered)
        else:
            workers = []
    report["celery"] = ("not_available" if not redis_ok else "error" if workers is None
                        else "connected" if workers else "no_workers")
    report["celery_workers"] = workers or []
    results["broker"] = report


def _probe_broker_with_redis_py(settings: Settings, report: dict[str, Any], clock: ImportClock) -> None:
    """`_probe_broker` through redis-py, for the URLs the probe leaves to it (TLS, client options)."""
    with clock.importing():
        import redis

        from squad.live.broker import BrokerView
        from squad.live.celery_control import celery_workers

    view = BrokerView(settings.broker, retries=0)
    try:
        redis_ok = view.ping()
        workers: list[str] | None = None
        if redis_ok:
            report["redis"] = "connected"
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
            if registered != 0:  # Celery is imported to ping them: local work, outside the bound
                with clock.importing():
                    import squad.live.celery_config  # noqa: F401
            workers = celery_workers(settings, expected=registered)
    finally:
        view.close()
    report["celery"] = ("not_available" if not redis_ok else "error" if workers is None
                        else "connected" if workers else "no_workers")
    report["celery_workers"] = workers or []
