"""What `squad orchestrate` is waiting for, said out loud.

A wait that prints nothing looks like a hang: with a Redis that answers and no worker consuming
`cards`, the cards stay QUEUED forever and the user cannot tell why. So while waiting (`--wait`) the
orchestrator says at least every `WAIT_REPORT_INTERVAL_S` how many cards are in which status and who
(if anyone) is running them (the workers are asked through `squad.live.celery_control`); a
long-running one in celery mode says at start, and every `CONSUMER_CHECK_INTERVAL_S` while it lasts,
that no worker consumes the queue (`ConsumerWatch`). At the end of a wait, `failed_cards` says which
cards FAILED and why.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from squad.core.safetext import escape_controls, excerpt
from squad.core.settings import Settings
from squad.core.statuses import ACTIVE
from squad.live.celery_control import cards_consumers

WAIT_REPORT_INTERVAL_S = 10.0
CONSUMER_CHECK_INTERVAL_S = 60.0
FAILED_SHOWN = 20  # FAILED cards named one per line at the end of a wait; the rest counted
FAILED_ERROR_CHARS = 300


def describe_wait(counts: Mapping[str, int], mode: str, consumers: list[str] | None, queue: str = "cards") -> str:
    """One line: the unsettled cards by status and who runs them."""
    waiting = {status.value: counts.get(status.value, 0) for status in sorted(ACTIVE, key=lambda s: s.value)}
    total = sum(waiting.values())
    parts = ", ".join(f"{n} {status}" for status, n in waiting.items() if n)
    line = f"waiting for {total} card(s): {parts}" if total else "no card left to wait for"
    in_review = counts.get("REVIEW", 0)
    if total and in_review:  # their dependants wait for a person, not for a worker
        line += f" ({in_review} in REVIEW: see squad review list)"
    if mode == "local":
        return f"{line} (running locally)"
    if consumers is None:
        return f"{line}; cannot ask the workers (broker unreachable)"
    if not consumers:
        return f"{line}; no worker is consuming `{queue}` (start one: squad worker)"
    return f"{line}; {len(consumers)} worker(s) consuming `{queue}`: {', '.join(consumers)}"


def failed_cards(list_failed: Callable[[int], list[Any]], total: int) -> list[str]:
    """One line per FAILED card (at most FAILED_SHOWN, most urgent first): its id and last error,
    escaped and cut, so `orchestrate --wait` exiting 1 says why. `list_failed(n)` lists n of them."""
    lines = [f"card {escape_controls(card.card_id)} FAILED: "
             f"{excerpt(card.last_error or 'no error recorded', FAILED_ERROR_CHARS)}"
             for card in list_failed(FAILED_SHOWN)]
    if total > len(lines):
        lines.append(f"and {total - len(lines)} more FAILED card(s): squad card list --status FAILED")
    return lines


class WaitReporter:
    """Calls `emit` with `describe_wait(...)` at most every `interval_s` (and on demand)."""

    def __init__(self, settings: Settings, mode: str, count: Callable[[], Mapping[str, int]],
                 emit: Callable[[str], None], *, interval_s: float = WAIT_REPORT_INTERVAL_S,
                 report_first_pass: bool = False) -> None:
        self.settings, self.mode, self.count, self.emit = settings, mode, count, emit
        self.interval_s = interval_s
        self.started = time.monotonic()
        self.last_report = self.started - (interval_s if report_first_pass else 0.0)

    def describe(self) -> str:
        """The current state in one line (asks the workers in celery mode)."""
        consumers = cards_consumers(self.settings) if self.mode == "celery" else []
        return describe_wait(self.count(), self.mode, consumers, self.settings.cards_queue)

    def maybe_report(self) -> None:
        """Report when `interval_s` has passed since the last report."""
        now = time.monotonic()
        if now - self.last_report >= self.interval_s:
            self.last_report = now
            self.emit(f"{self.describe()} ({now - self.started:.0f} s)")


class ConsumerWatch:
    """A long-running celery-mode orchestrator's check: at start and every `interval_s` while no
    worker consumes `cards`, one line through `emit` (its cards wait in the queue for one).

    A daemon thread, so a broadcast that waits for a registered but dead worker never delays a pass.
    """

    def __init__(self, settings: Settings, emit: Callable[[str], None], *,
                 interval_s: float = CONSUMER_CHECK_INTERVAL_S) -> None:
        self.settings, self.emit, self.interval_s = settings, emit, interval_s
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="consumer-watch", daemon=True)

    def start(self) -> ConsumerWatch:
        self.thread.start()
        return self

    def check(self) -> None:
        """Ask the workers once; say so when none consumes `cards`."""
        consumers, queue = cards_consumers(self.settings), self.settings.cards_queue
        if consumers is None:
            self.emit(f"cannot ask the workers whether one consumes `{queue}` (broker unreachable)")
        elif not consumers:
            self.emit(f"no worker is consuming `{queue}` yet: cards wait in the queue until one does"
                      " (start one: squad worker)")

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.check()
            except Exception as exc:  # a probe must never end the orchestrator
                self.emit(f"cannot ask the workers: {type(exc).__name__}: {exc}")
            self.stopping.wait(self.interval_s)

    def stop(self) -> None:
        self.stopping.set()
