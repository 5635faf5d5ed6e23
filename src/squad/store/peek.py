"""A SQLite store read without SQLAlchemy: what `squad status` shows of it, in a few milliseconds.

Importing SQLAlchemy (and the store built on it) costs about half of `squad status`'s 0.5 s
(docs/benchmarks.md "CLI"); the status needs two answers of a local file: the cards counted by
status and the store's instance id (its Redis namespace). `peek` reads them through the standard
library's `sqlite3`, read-only, when the file exists and its schema is at `SCHEMA_HEAD`; anything
else (another database, a missing file, a schema to migrate, an unexpected URL) is None, and the
caller opens the `CardStore` as every other command does (which creates and migrates).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote

from squad.store.head import SCHEMA_HEAD

PEEK_BUSY_TIMEOUT_S = 1.0  # a writer holding the file longer: the caller's probe reports no answer


@dataclass(frozen=True)
class Peek:
    """What `squad status` needs of a store."""

    counts: dict[str, int]  # status -> cards, only the statuses that have cards
    instance_id: str
    notifications: dict[str, int]  # outbox rows by state, and `failing` (pending after a failure)
    notify_errors: list[str]  # the latest failed deliveries, "target: error (card)"


def sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///` URL (relative to the working directory, as SQLAlchemy reads it);
    None for anything else, including options other than `timeout` and in-memory databases."""
    if not url.startswith("sqlite:///"):
        return None
    path, _, query = url.removeprefix("sqlite:///").partition("?")
    if not path or path == ":memory:" or any(key != "timeout" for key, _ in parse_qsl(query)):
        return None
    return Path(path)


def peek(url: str, *, timeout_s: float = PEEK_BUSY_TIMEOUT_S) -> Peek | None:
    """The counts by status and the instance id of an up-to-date SQLite store, else None."""
    path = sqlite_path(url)
    if path is None or not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=timeout_s)
    except sqlite3.Error:
        return None
    try:
        if conn.execute("SELECT version_num FROM alembic_version").fetchall() != [(SCHEMA_HEAD,)]:
            return None
        counts = dict(conn.execute("SELECT status, count(*) FROM cards GROUP BY status").fetchall())
        row = conn.execute("SELECT instance_id FROM instance").fetchone()
        outbox = dict(conn.execute("SELECT state, count(*) FROM notify_outbox GROUP BY state").fetchall())
        outbox["failing"] = conn.execute(
            "SELECT count(*) FROM notify_outbox WHERE state = 'pending' AND attempts > 0").fetchone()[0]
        errors = [f"{target}: {error} ({card})" for target, error, card in conn.execute(
            "SELECT target, last_error, card_id FROM notify_outbox WHERE last_error IS NOT NULL AND state != 'sent' "
            "ORDER BY id DESC LIMIT 5").fetchall()]
    except sqlite3.Error:  # no such table (never migrated), locked past the timeout, not a database
        return None
    finally:
        conn.close()
    if not row:
        return None
    return Peek(counts={str(k): int(v) for k, v in counts.items()}, instance_id=str(row[0]),
                notifications={str(k): int(v) for k, v in outbox.items()}, notify_errors=errors)
