"""Which orchestrators are alive, and where they run cards: a heartbeat per orchestrator in Redis.

`squad status` and `/health` used to report the mode a producer *would* pick (Celery whenever a
broker answers) while a running orchestrator had decided otherwise at its start, so they said
`celery` while every card ran inside the orchestrator. Now each running orchestrator writes what it
decided (session, mode, host, pid) under the store's namespace with a short TTL and renews it; the
readers report the mode of the orchestrators alive, and only with none fall back to the producer's
decision. A key per orchestrator (Redis expires it when its writer dies) plus a set naming them, so
a reader needs two round trips, never a SCAN.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

# redis-py is imported by `OrchestratorPresence`, not here: `squad status` reads the entries without it
# (`squad.live.probe`)

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis

    from squad.core.namespace import RedisKeys
    from squad.live.probe import QuickRedis

PRESENCE_TTL_S = 30  # an orchestrator not heard from for this long is gone (killed, host down)
PRESENCE_EVERY_S = 10.0  # how often a running orchestrator renews its entry


@dataclass(frozen=True)
class OrchestratorInfo:
    """One running orchestrator, as it describes itself."""

    id: str
    session: str
    mode: str  # "celery" or "local": where it sends the cards it releases
    host: str
    pid: int
    started_at: float

    def describe(self) -> str:
        """`session default: celery (pid 4242 on vm)`."""
        return f"session {self.session}: {self.mode} (pid {self.pid} on {self.host})"


def _decode(raw: str | None) -> OrchestratorInfo | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return OrchestratorInfo(id=str(data["id"]), session=str(data["session"]), mode=str(data["mode"]),
                                host=str(data["host"]), pid=int(data["pid"]), started_at=float(data["started_at"]))
    except (ValueError, KeyError, TypeError):
        return None


def _alive(ids: list[str], raws: list[str | None]) -> tuple[list[OrchestratorInfo], list[str]]:
    """(the live orchestrators, newest first; the ids whose entry expired)."""
    alive = [info for info in map(_decode, raws) if info is not None]
    gone = [oid for oid, raw in zip(ids, raws, strict=True) if raw is None]
    return sorted(alive, key=lambda i: -i.started_at), gone


def live_orchestrators(client: redis.Redis | QuickRedis, keys: RedisKeys) -> list[OrchestratorInfo]:
    """The orchestrators of this store alive now, newest first (raises redis.RedisError, or
    squad.live.probe.ProbeError from the probe's client)."""
    ids = sorted(client.smembers(keys.orchestrators))
    if not ids:
        return []
    alive, gone = _alive(ids, client.mget([keys.orchestrator(oid) for oid in ids]))
    if gone:
        client.srem(keys.orchestrators, *gone)
    return alive


async def live_orchestrators_async(client: aioredis.Redis, keys: RedisKeys) -> list[OrchestratorInfo]:
    """`live_orchestrators` for the API's asyncio client."""
    ids = sorted(await client.smembers(keys.orchestrators))
    if not ids:
        return []
    alive, gone = _alive(ids, await client.mget([keys.orchestrator(oid) for oid in ids]))
    if gone:
        await client.srem(keys.orchestrators, *gone)
    return alive


def mode_in_use(alive: list[OrchestratorInfo]) -> str | None:
    """The mode cards run in according to the live orchestrators (the newest one's), None with none."""
    return alive[0].mode if alive else None


class OrchestratorPresence:
    """A running orchestrator's entry, renewed every PRESENCE_EVERY_S by a daemon thread.

    Best effort: a Redis that does not answer only delays the next renewal (the entry then expires,
    and the readers fall back to what a producer would decide).
    """

    def __init__(self, events_url: str, keys: RedisKeys, *, session: str, mode: str) -> None:
        self.keys = keys
        self.info = OrchestratorInfo(id=uuid.uuid4().hex, session=session, mode=mode, host=socket.gethostname(),
                                     pid=os.getpid(), started_at=time.time())
        from squad.live.connections import redis_client

        self.client = redis_client(events_url)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="orchestrator-presence", daemon=True)
        self.failed = False

    def start(self) -> OrchestratorPresence:
        """Write the entry at once (readers see it before the first pass), then keep renewing it."""
        self.beat()
        self.thread.start()
        return self

    def beat(self) -> bool:
        """Write (renew) the entry; False when Redis did not take it."""
        import redis

        payload: dict[str, Any] = asdict(self.info)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.set(self.keys.orchestrator(self.info.id), json.dumps(payload), ex=PRESENCE_TTL_S)
                pipe.sadd(self.keys.orchestrators, self.info.id)
                pipe.expire(self.keys.orchestrators, PRESENCE_TTL_S * 2)
                pipe.execute()
        except redis.RedisError as exc:
            if not self.failed:
                import structlog

                structlog.get_logger(__name__).warning("orchestrator heartbeat not written",
                                                       error=f"{type(exc).__name__}: {exc}")
            self.failed = True
            return False
        self.failed = False
        return True

    def _run(self) -> None:
        while not self.stopping.wait(PRESENCE_EVERY_S):
            self.beat()

    def stop(self) -> None:
        """Remove the entry: readers stop counting this orchestrator at once."""
        import redis

        self.stopping.set()
        self.thread.join(timeout=PRESENCE_EVERY_S)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.delete(self.keys.orchestrator(self.info.id))
                pipe.srem(self.keys.orchestrators, self.info.id)
                pipe.execute()
        except redis.RedisError:
            pass  # it expires by itself
        finally:
            self.client.close()
