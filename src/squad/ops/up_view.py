"""What `squad up` shows: a live Rich view on a terminal, one line per status change otherwise.

The services' own output (Celery banners, warnings, reconciler lines) goes to `.squad/logs/*.log`;
the terminal shows what a person wants to know: where the dashboard is, each card's status, progress
and step, when a retry comes, which workers run, and how long the whole backlog took.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.text import Text

from squad.core.safetext import cell, escape_controls, table
from squad.core.statuses import ACTIVE, Status
from squad.store.card_store import CardStore

MAX_ROWS = 30  # cards shown in the live view (active ones first)
PROBE_INTERVAL_S = 3.0
STATUS_STYLE = {"DONE": "green", "FAILED": "red", "RETRYING": "yellow", "IN_PROGRESS": "cyan", "QUEUED": "blue",
                "BLOCKED": "magenta", "CANCELLED": "dim", "REVIEW": "yellow"}


@dataclass(frozen=True)
class CardLine:
    """One card as shown."""

    card_id: str
    status: str
    progress: int
    step: str
    attempts: int
    error: str
    next_in_s: float | None  # RETRYING: seconds until the next attempt


def read_cards(store: CardStore, now: float) -> list[CardLine]:
    """The cards, most urgent first, with the retry delay of RETRYING ones."""
    lines: list[CardLine] = []
    for card in store.list_cards():
        next_in = None
        if card.status == Status.RETRYING:
            due = store.execution_state(card.card_id).get("next_attempt_at")
            next_in = max(0.0, float(due) - now) if due is not None else None
        lines.append(CardLine(card.card_id, card.status.value, card.progress, card.current_step or "", card.attempts,
                              (card.last_error or "").splitlines()[0][:80] if card.last_error else "", next_in))
    return lines


class Probes:
    """Background look-ups that may be slow: Celery workers (a broadcast) and the API's /health."""

    def __init__(self, workers: Callable[[], list[str] | None], health_url: str | None) -> None:
        self.workers: list[str] | None = None
        self.api_ready = False
        self._workers_fn, self._health_url = workers, health_url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="squad-up-probes", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._health_url and not self.api_ready:
                try:
                    with urllib.request.urlopen(self._health_url, timeout=2) as resp:
                        self.api_ready = resp.status == 200
                except OSError:
                    pass
            try:
                self.workers = self._workers_fn()
            except Exception:
                self.workers = None
            self._stop.wait(1.0 if not self.api_ready and self._health_url else PROBE_INTERVAL_S)


def summary(lines: list[CardLine], elapsed_s: float) -> str | None:
    """`6/6 done in 23 s` once no card is active (None before)."""
    if not lines or any(Status(line.status) in ACTIVE for line in lines):
        return None
    done = sum(1 for line in lines if line.status == "DONE")
    failed = sum(1 for line in lines if line.status == "FAILED")
    extra = f", {failed} failed" if failed else ""
    return f"{done}/{len(lines)} done{extra} in {elapsed_s:.0f} s"


class UpView:
    """Draws the state of `squad up`: live on a terminal, as plain lines otherwise."""

    def __init__(self, console: Console, *, live: bool, api_url: str | None, redis_desc: str, store_desc: str,
                 logs_dir: Path, started: float) -> None:
        self.console, self.live_mode = console, live
        self.api_url, self.redis_desc, self.store_desc, self.logs_dir = api_url, redis_desc, store_desc, logs_dir
        self.started = started  # time.monotonic() when `squad up` began
        self.done_line: str | None = None
        self.done_after_s: float | None = None  # the clock stops when every card has settled
        self._seen: dict[str, tuple[str, int]] = {}
        self._announced_api = False
        self._live: Live | None = None

    def __enter__(self) -> UpView:
        if self.live_mode:
            self._live = Live(Text("starting…"), console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        else:
            self.console.print(f"squad up: Redis {self.redis_desc}; store {self.store_desc}; "
                               f"process logs in {self.logs_dir}/")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def update(self, lines: list[CardLine], *, api_ready: bool, workers: list[str] | None,
               children: dict[str, str]) -> None:
        """Show the current state (live), or print what changed (plain)."""
        running = time.monotonic() - self.started
        done = summary(lines, running)
        finished = self.done_line is None and done is not None
        if finished:
            self.done_line, self.done_after_s = done, running
        elif done is None:  # cards were added and run again: the clock goes on
            self.done_line = self.done_after_s = None
        elapsed = running if self.done_after_s is None else self.done_after_s
        if self._live is not None:
            self._live.update(self._render(lines, api_ready, workers, children, elapsed))
            return
        if api_ready and not self._announced_api and self.api_url:
            self._announced_api = True
            self.console.print(f"dashboard and API on {self.api_url} (Ctrl-C stops everything)")
        for line in lines:
            key = (line.status, line.attempts)
            if self._seen.get(line.card_id) != key:
                self._seen[line.card_id] = key
                # Card and agent text (the error) is data: no markup, controls escaped.
                self.console.print(escape_controls(f"{datetime.now().strftime('%H:%M:%S')} {line.card_id} "
                                                   f"{line.status}{self._detail(line)}"), markup=False)
        if finished:
            self.console.print(self.done_line)

    @staticmethod
    def _detail(line: CardLine) -> str:
        if line.status == "RETRYING":
            when = "" if line.next_in_s is None else f"; next attempt in {line.next_in_s:.0f} s"
            return f" (attempt {line.attempts} failed: {line.error}{when})"
        if line.status == "FAILED":
            return f" (after {line.attempts} attempt(s): {line.error})"
        return ""

    def _render(self, lines: list[CardLine], api_ready: bool, workers: list[str] | None,
                children: dict[str, str], elapsed: float) -> RenderableType:
        dashboard = (f"[bold]{self.api_url}[/bold]" if api_ready else "starting…") if self.api_url else "not installed"
        head = Text.from_markup(f"dashboard {dashboard} · Redis {self.redis_desc} · store {self.store_desc}\n"
                                f"process logs: {self.logs_dir}/ · Ctrl-C stops everything")
        shown = sorted(lines, key=lambda c: Status(c.status) not in ACTIVE)[:MAX_ROWS]
        rows = []
        for line in shown:
            step = line.step
            if line.status == "RETRYING":
                step = f"attempt {line.attempts} failed" + (
                    f", next attempt in {line.next_in_s:.0f} s" if line.next_in_s is not None else "")
            elif line.status == "FAILED":
                step = line.error
            rows.append((line.card_id, cell(line.status, STATUS_STYLE.get(line.status, "")),
                         ProgressBar(total=100, completed=line.progress, width=20), f"{line.progress:>3}%", step[:60]))
        grid = table(("card", "status", "progress", "", "step"), rows, box=None, pad_edge=False, show_edge=False)
        more = len(lines) - len(shown)
        counts = {s: sum(1 for c in lines if c.status == s) for s in dict.fromkeys(c.status for c in lines)}
        services = "  ".join(f"{name} {state}" for name, state in children.items())
        workers_text = escape(escape_controls(", ".join(workers))) if workers else (
            "none answering yet" if workers is not None else "?")  # worker names are hosts' data: no markup
        foot = Text.from_markup(
            (f"… and {more} more card(s)\n" if more > 0 else "")
            + f"workers: {workers_text} · {services}\n"
            + ("  ".join(f"{n} {s}" for s, n in counts.items()) + f" · {elapsed:.0f} s")
            + (f"\n[bold green]{self.done_line}[/bold green]" if self.done_line else ""))
        return Group(head, grid, foot)
