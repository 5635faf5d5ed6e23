"""Redis clients (sync and asyncio) with the one retry policy, and Redis stream ids.

Every Redis client squad makes comes from here, so every call is bounded the same way: a hung or
restarting Redis never hangs a worker, a CLI command or an API request. Stream ids (`<ms>-<seq>`)
are parsed, compared and validated here too, for the WebSocket feed, the log routes and the readers.
"""

from __future__ import annotations

import re
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from squad.core.constants import REDIS_CONNECT_TIMEOUT_S, REDIS_SOCKET_TIMEOUT_S

#: Retries of one Redis call. redis-py's default is ten with back-off up to 10 s: during an outage a
#: single event write would freeze an attempt (its output, limits and cancel checks), and an API
#: request would hang. One quick retry still covers a pooled connection gone stale after a restart.
REDIS_RETRIES = 2



def redis_backoff() -> ExponentialBackoff:
    """Back-off between those retries (shared by the sync and asyncio clients)."""
    return ExponentialBackoff(cap=0.5, base=0.05)


def redis_options(socket_timeout: float = REDIS_SOCKET_TIMEOUT_S,
                  connect_timeout: float = REDIS_CONNECT_TIMEOUT_S) -> dict[str, Any]:
    """Connection options of every Redis client we make: every call is bounded."""
    return {"socket_timeout": socket_timeout, "socket_connect_timeout": connect_timeout,
            "health_check_interval": 15, "decode_responses": True}


def redis_client(url: str, *, socket_timeout: float = REDIS_SOCKET_TIMEOUT_S,
                 connect_timeout: float = REDIS_CONNECT_TIMEOUT_S, retries: int = REDIS_RETRIES) -> redis.Redis:
    """A Redis client whose every call is bounded (a hung Redis never hangs a worker).

    `retries=0` for a one-shot probe (`squad status`): a refused connection answers at once."""
    return redis.Redis.from_url(url, retry=Retry(redis_backoff(), retries),
                                **redis_options(socket_timeout, connect_timeout))


def async_redis(url: str, *, socket_timeout: float = REDIS_SOCKET_TIMEOUT_S) -> aioredis.Redis:
    """The asyncio twin of `redis_client`: same bounds, same retry policy."""
    return aioredis.Redis.from_url(url, retry=AsyncRetry(redis_backoff(), REDIS_RETRIES),
                                   **redis_options(socket_timeout))


def redis_is_full(exc: BaseException) -> bool:
    """True for the error Redis answers a write with once `maxmemory` is reached (noeviction)."""
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or (
        isinstance(exc, redis.ResponseError) and str(exc).startswith("OOM "))


# ---- stream ids -------------------------------------------------------------------------------
#: A stream id as clients may send it: `<ms>-<seq>`, or `<ms>` alone (meaning `<ms>-0`).
STREAM_ID_RE = re.compile(r"^\d{1,19}(-\d{1,19})?$")
#: The id before every entry: reading "after STREAM_START" reads a stream from its beginning.
STREAM_START = "0-0"

StreamKey = tuple[int, int]


def stream_key(entry_id: str) -> StreamKey:
    """A stream id as a comparable tuple ('5' means '5-0')."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def stream_id_time(entry_id: str) -> float | None:
    """When Redis added the entry (epoch s, from the id's milliseconds); None for a non-id."""
    ms = entry_id.partition("-")[0]
    return int(ms) / 1000 if ms.isdigit() else None


def stream_tail(client: redis.Redis, stream: str) -> str:
    """The id of a stream's newest entry (STREAM_START when empty): a reader that starts there misses
    nothing added later. Reading "after $" instead loses what arrives between two blocking reads."""
    newest = client.xrevrange(stream, count=1)
    return str(newest[0][0]) if newest else STREAM_START
