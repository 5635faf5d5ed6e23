"""`GET /metrics`: Prometheus text from a private registry, read from the store at scrape time.

Counts live in the store (several API processes and workers share it), so a custom collector
reads them per scrape instead of keeping in-process counters that would differ per process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from squad.api.metrics.queries import Histogram, run_stats
from squad.attempt.workspaces import disk_usage_bytes
from squad.live.broker import queue_keys
from squad.store.team_store import TeamStore

if TYPE_CHECKING:
    from squad.api.monitor import WorkerMonitor
    from squad.api.ws import EventHub
    from squad.core.settings import Settings
    from squad.store.card_store import CardStore


class MetricsSource(Protocol):
    """What the exposition reads of one server process (`api.state.AppState` is one)."""

    settings: Settings
    store: CardStore
    hub: EventHub
    monitor: WorkerMonitor
    internal_errors: int


async def queue_depth(broker: aioredis.Redis, queue: str) -> int:
    """Messages waiting in the store's cards queue (every priority list) in one pipeline."""
    async with broker.pipeline(transaction=False) as pipe:
        for key in queue_keys(queue):
            pipe.llen(key)
        return int(sum(await pipe.execute()))


def _histogram(name: str, doc: str, hist: Histogram) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = [(repr(float(le)), float(n)) for le, n in hist.buckets]
    buckets.append(("+Inf", float(hist.count)))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=hist.total)


class SquadCollector(Collector):
    """Cards, runs, durations and live API state."""

    def __init__(self, state: MetricsSource) -> None:
        self.state = state
        self.queue_depth: int | None = None

    def collect(self) -> Iterator[Metric]:
        store = self.state.store
        # A gauge (cards in each status now); named squad_cards_total as dashboards expect it.
        cards = GaugeMetricFamily("squad_cards_total", "Cards in each status now.", labels=["status"])
        for status, n in sorted(store.count_by_status().items()):
            cards.add_metric([status], n)
        yield cards
        stats = run_stats(store)
        runs = CounterMetricFamily("squad_runs", "Ended runs (attempts) by outcome.", labels=["outcome"])
        for status, n in sorted(stats.by_status.items()):
            runs.add_metric([status], n)
        yield runs
        yield _histogram("squad_run_duration_seconds", "Run time of ended runs.", stats.duration)
        yield _histogram("squad_queue_wait_seconds", "Time from QUEUED to the start of a run.",
                         stats.queue_wait)
        yield CounterMetricFamily("squad_cost_usd", "Agent cost of every run, USD.", value=store.total_cost())
        tokens = CounterMetricFamily("squad_tokens", "Tokens the agents reported over ended runs: input (every "
                                     "prompt token read, cached ones included), output, and of input those read "
                                     "from and written to the prompt cache.", labels=["kind"])
        for kind, n in stats.tokens.items():
            tokens.add_metric([kind], n)
        yield tokens
        yield GaugeMetricFamily("squad_active_websockets", "Open /ws/tasks sockets in this API process.",
                                value=self.state.hub.count)
        snap = self.state.monitor.cached()
        yield GaugeMetricFamily("squad_workers_online", "Celery workers that answered the last broadcast.",
                                value=snap.online if snap is not None else 0)
        if self.queue_depth is not None:
            yield GaugeMetricFamily("squad_queue_length", "Messages waiting in the cards queues.",
                                    value=self.queue_depth)
        yield GaugeMetricFamily("squad_workspace_disk_bytes",
                                "Bytes on disk of the card worktrees under SQUAD_WORKDIR on the API's machine.",
                                value=disk_usage_bytes(self.state.settings))
        outbox = TeamStore(store).outbox_counts()
        notes = GaugeMetricFamily("squad_notifications", "[[notify]] deliveries by state: sent, pending, failing "
                                  "(pending after a failed try), dropped (after a day of failures).",
                                  labels=["state"])
        for state in ("sent", "pending", "failing", "dropped"):
            notes.add_metric([state], outbox.get(state, 0))
        yield notes
        yield CounterMetricFamily("squad_api_internal_errors", "Requests that failed with a 500 in this process.",
                                  value=self.state.internal_errors)


class Exposition:
    """The private registry of one app."""

    def __init__(self, state: MetricsSource) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = SquadCollector(state)
        self.registry.register(self.collector)

    def render(self, depth: int | None) -> bytes:
        """The text exposition (blocking: reads the store)."""
        self.collector.queue_depth = depth
        return generate_latest(self.registry)
