"""What `squad orchestrate --wait` is waiting for, said out loud.

A wait that prints nothing looks like a hang: with a Redis that answers and no worker consuming
`cards`, the cards stay QUEUED forever and the user cannot tell why. So the orchestrator asks the
workers which queues they consume (one Celery broadcast), falls back to local mode in `auto` mode
when none consumes `cards`, and while waiting says at least every `WAIT_REPORT_INTERVAL_S` how many
cards are in which status and who (if anyone) is running them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from squad.cards import ACTIVE
from squad.config import Settings, mask_url
from squad.constants import CARDS_QUEUE

WAIT_REPORT_INTERVAL_S = 10.0
WORKER_PROBE_TIMEOUT_S = 2.0  # a Celery broadcast waits this long for every reply
EXIT_TIMEOUT = 124  # `--timeout` reached (the code GNU `timeout` uses)


def registered_workers(settings: Settings) -> int | None:
    """How many workers are registered on the broker (None when it cannot be asked)."""
    from squad.broker import BrokerView

    view = BrokerView(settings.broker)
    try:
        return view.registered_workers()
    except Exception:
        return None
    finally:
        view.close()


def cards_consumers(settings: Settings, timeout_s: float = WORKER_PROBE_TIMEOUT_S) -> list[str] | None:
    """Names of the Celery workers consuming the `cards` queue; None when the broker cannot be asked.

    The broadcast ends as soon as every worker registered on the broker answered (as `squad status`'s
    ping does) instead of always waiting `timeout_s`: `orchestrate --wait` asks from its loop, and a
    2 s wait there held up the release of the first dependants (chain benchmark: one 2 s hop).
    """
    expected = registered_workers(settings)
    if expected == 0:
        return []
    from squad.celery_app import make_celery

    app = make_celery(settings)
    try:
        replies = app.control.inspect(timeout=timeout_s, limit=expected).active_queues() or {}
    except Exception:
        return None
    finally:
        app.close()
    return sorted(name for name, queues in replies.items()
                  if any(isinstance(q, dict) and q.get("name") == CARDS_QUEUE for q in queues or []))


def no_consumer_reason(settings: Settings) -> str | None:
    """Why celery mode cannot run cards now (no worker answered), or None when one consumes `cards`."""
    consumers = cards_consumers(settings)
    if consumers:
        return None
    return (f"Redis answers at {mask_url(settings.broker)} but no worker is consuming `{CARDS_QUEUE}` "
            f"(none answered within {WORKER_PROBE_TIMEOUT_S:g} s)")


def describe_wait(counts: Mapping[str, int], mode: str, consumers: list[str] | None) -> str:
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
        return f"{line}; no worker is consuming `{CARDS_QUEUE}` (start one: squad worker)"
    return f"{line}; {len(consumers)} worker(s) consuming `{CARDS_QUEUE}`: {', '.join(consumers)}"


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
        return describe_wait(self.count(), self.mode, consumers)

    def maybe_report(self) -> None:
        """Report when `interval_s` has passed since the last report."""
        now = time.monotonic()
        if now - self.last_report >= self.interval_s:
            self.last_report = now
            self.emit(f"{self.describe()} ({now - self.started:.0f} s)")
