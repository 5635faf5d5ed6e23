"""Database writes that must not be lost to a blip: bounded retries with backoff.

A worker that finished an attempt while the database restarts, or while another process holds the
SQLite write lock past the busy timeout, must still record the outcome: `retry_db` retries the
write with exponential backoff for a bounded time, and only transient errors (connection lost,
database locked) are retried; a real bug (integrity, programming error) surfaces at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import structlog
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

log = structlog.get_logger(__name__)
T = TypeVar("T")

DB_RETRY_FIRST_S = 0.25
DB_RETRY_MAX_DELAY_S = 5.0
DB_RETRY_BUDGET_S = 120.0  # after this long without a database, give up (the sweeper takes over)


def is_disk_full(exc: BaseException) -> bool:
    """The database has no room left (SQLite `SQLITE_FULL`, PostgreSQL `53100 disk_full`)."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    return (getattr(orig, "sqlite_errorname", "") == "SQLITE_FULL" or getattr(orig, "sqlstate", "") == "53100"
            or "database or disk is full" in str(orig) or "No space left on device" in str(orig))


def is_transient(exc: BaseException) -> bool:
    """A database error worth retrying: lost connection, server restarting, lock or busy timeout.

    A full disk is not: the same write would fail the same way; the caller writes less instead.
    """
    if is_disk_full(exc):
        return False
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def retry_db(fn: Callable[[], T], *, what: str, budget_s: float = DB_RETRY_BUDGET_S,
             sleep: Callable[[float], None] = time.sleep) -> T:
    """`fn()`, retried on transient database errors with backoff (0.25 s doubling to 5 s) for at
    most `budget_s`; the last error propagates once the budget is spent."""
    deadline = time.monotonic() + budget_s
    delay = DB_RETRY_FIRST_S
    tries = 0
    while True:
        try:
            result = fn()
        except Exception as exc:
            tries += 1
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("database write failed; retrying", what=what, attempt=tries, retry_in_s=delay,
                        error=str(exc).splitlines()[0][:200])
            sleep(delay)
            delay = min(delay * 2, DB_RETRY_MAX_DELAY_S)
            continue
        if tries:
            log.info("database write succeeded after retries", what=what, attempts=tries + 1)
        return result
