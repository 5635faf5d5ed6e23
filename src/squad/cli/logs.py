"""`squad logs`: a card's live log from Redis, or its archived log from the store."""

from __future__ import annotations

import sys
import time

import redis

from squad.core.errors import NotFoundError
from squad.core.safetext import escape_controls
from squad.core.settings import Settings
from squad.core.statuses import FINAL
from squad.live.connections import STREAM_START, redis_client
from squad.live.events import EventBus, format_log_line, try_event_bus
from squad.store.card_store import CardStore

FOLLOW_BLOCK_MS = 1000


def _line(text: str, raw: bool) -> str:
    """One output line: agent text with control characters escaped unless `--raw` asked for bytes."""
    return text if raw else escape_controls(text)


def _print(entry: dict[str, str], raw: bool = False) -> None:
    # The archived log's format, so a live line and its archived copy read the same.
    line = format_log_line(entry.get("timestamp", ""), entry.get("level", "INFO"), entry.get("message", ""))
    sys.stdout.write(_line(line, raw) + "\n")
    sys.stdout.flush()


def show_logs(settings: Settings, store: CardStore, card_id: str, *, limit: int, attempt: int | None,
              raw: bool = False) -> None:
    """Print the last `limit` lines: the live stream when present, else the archive."""
    if attempt is None:
        bus = try_event_bus(settings.events, settings.log_ttl, store.redis_keys)
        if bus is not None:
            entries = bus.read_logs(card_id, limit=limit)
            bus.close()
            if entries:
                for entry in entries:
                    _print(entry, raw)
                return
    found = store.last_run_log(card_id, attempt)
    if found is None:
        if attempt is not None:
            raise NotFoundError(f"card {card_id} has no attempt {attempt}")
        sys.stderr.write(f"card {card_id} has no log yet\n")
        return
    run, text = found
    lines = text.splitlines()[-limit:]
    sys.stdout.write(_line(f"# attempt {run.attempt} ({run.status}) on {run.worker}", raw) + "\n")
    for line in lines:
        sys.stdout.write(_line(line, raw) + "\n")


def follow_logs(settings: Settings, store: CardStore, card_id: str, *, limit: int, raw: bool = False) -> None:
    """Print the last lines, then tail the stream live; resume after a Redis reconnect.

    Ends once the card is DONE/FAILED/CANCELLED and the stream has been quiet for a moment.
    """
    client = redis_client(settings.events, socket_timeout=FOLLOW_BLOCK_MS / 1000 + 5)
    key = store.redis_keys.task_logs(card_id)
    last_id = STREAM_START
    try:
        bus = EventBus(settings.events, store.redis_keys, log_ttl_s=settings.log_ttl)
        for entry in bus.read_logs(card_id, limit=limit):
            _print(entry, raw)
            last_id = entry["id"]
        bus.close()
    except redis.RedisError:
        sys.stderr.write("squad: live log not reachable; retrying\n")
    quiet_since: float | None = None
    while True:
        try:
            res = client.xread({key: last_id}, count=500, block=FOLLOW_BLOCK_MS)
        except redis.RedisError:
            time.sleep(1.0)  # Redis restarting: keep our position and try again
            continue
        got = False
        for _stream, entries in res or []:
            for entry_id, fields in entries:
                _print(fields, raw)
                last_id = entry_id
                got = True
        if got:
            quiet_since = None
            continue
        if store.get_card(card_id).status in FINAL:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 1.0:
                return
