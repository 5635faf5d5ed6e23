"""`squad watch`: Rich live progress bars for running cards, fed by the `task_updates` stream."""

from __future__ import annotations

import time

import redis
from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from squad.core.safetext import escape_controls
from squad.core.settings import Settings
from squad.core.statuses import statuses_where
from squad.live.connections import redis_client, stream_tail
from squad.live.events import decode_event
from squad.store.card_store import CardStore


def run_watch(settings: Settings, store: CardStore, *, interval: float = 0.5) -> None:
    """Draw until Ctrl-C; starts from the store's state, then follows events."""
    # Card ids and steps are agent/user text: columns without markup, values with controls escaped.
    progress = Progress(TextColumn("{task.fields[card]:<16}", markup=False), BarColumn(),
                        TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[step]}", markup=False),
                        TimeElapsedColumn())
    bars: dict[str, TaskID] = {}
    status_line = Text("")

    def ensure(card_id: str, value: int, step: str) -> None:
        step = escape_controls(step[:50])
        if card_id not in bars:
            bars[card_id] = progress.add_task(card_id, total=100, card=escape_controls(card_id), step=step)
        progress.update(bars[card_id], completed=value, step=step)

    for running in sorted(statuses_where("running")):
        for card in store.list_cards(status=running.value):
            ensure(card.card_id, card.progress, card.current_step or "")
    client = redis_client(settings.events, socket_timeout=interval + 5)
    last_id: str | None = None  # the stream's tail once Redis answers: no event lost between two reads
    stream = store.redis_keys.task_updates
    with Live(Group(progress, status_line), refresh_per_second=max(1, int(1 / interval)), transient=False):
        try:
            while True:
                try:
                    if last_id is None:
                        last_id = stream_tail(client, stream)
                    res = client.xread({stream: last_id}, count=500, block=int(interval * 1000))
                except redis.RedisError:
                    status_line.plain = "event stream unreachable; retrying"
                    time.sleep(1)
                    continue
                for _s, entries in res or []:
                    for entry_id, fields in entries:
                        last_id = entry_id
                        ev = decode_event(entry_id, fields)
                        cid = ev.get("card_id", "")
                        if ev.get("type") == "progress":
                            ensure(cid, int(ev.get("progress", 0)), str(ev.get("current_step", "")))
                        elif ev.get("type") == "status":
                            st = ev.get("status")
                            if st in ("DONE", "FAILED", "CANCELLED", "RETRYING") and cid in bars:
                                progress.update(bars[cid], step=f"{st}")
                                if st != "DONE":
                                    progress.stop_task(bars[cid])
                counts = store.count_by_status()
                status_line.plain = "  ".join(f"{k} {v}" for k, v in counts.items() if v)
        except KeyboardInterrupt:
            return
