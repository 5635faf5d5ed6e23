"""Aggregate SQL over runs for `/metrics` (one query, whatever the number of runs).

Kept here rather than in `store.py` because only the Prometheus exposition needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select

from squad.store.card_store import CardStore
from squad.store.tables import runs as runs_t

DURATION_BUCKETS_S: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
WAIT_BUCKETS_S: tuple[float, ...] = (0.1, 0.5, 1, 5, 15, 30, 60, 300, 900, 3600)
#: `squad_tokens_total{kind}` and the run columns they sum
TOKEN_KINDS: dict[str, ColumnElement[Any]] = {
    "input": runs_t.c.input_tokens, "output": runs_t.c.output_tokens,
    "cache_read": runs_t.c.cache_read_tokens, "cache_creation": runs_t.c.cache_creation_tokens}


@dataclass
class Histogram:
    """Cumulative bucket counts (`le` -> count), plus sum and count."""

    buckets: list[tuple[float, int]] = field(default_factory=list)
    total: float = 0.0
    count: int = 0


@dataclass
class RunStats:
    """Ended runs by status and the histograms of their run time and queue wait."""

    by_status: dict[str, int] = field(default_factory=dict)
    duration: Histogram = field(default_factory=Histogram)
    queue_wait: Histogram = field(default_factory=Histogram)
    #: tokens the agents reported, summed over ended runs: input (cached included), output, and the
    #: cache split of input
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_KINDS, 0))



def _bucket_columns(value: ColumnElement[Any], cond: ColumnElement[bool],
                    buckets: Sequence[float]) -> list[ColumnElement[Any]]:
    return [func.sum(case((and_(cond, value <= b), 1), else_=0)) for b in buckets]


def run_stats(store: CardStore) -> RunStats:
    """Every ended run, aggregated in one query grouped by run status."""
    ended = runs_t.c.ended_at.is_not(None)
    duration = runs_t.c.ended_at - runs_t.c.started_at
    has_wait = runs_t.c.queued_at.is_not(None)
    wait = runs_t.c.started_at - runs_t.c.queued_at
    columns: list[ColumnElement[Any]] = [
        runs_t.c.status,
        func.count(),
        func.coalesce(func.sum(duration), 0.0),
        func.sum(case((has_wait, 1), else_=0)),
        func.coalesce(func.sum(case((has_wait, wait), else_=0.0)), 0.0),
        *_bucket_columns(duration, ended, DURATION_BUCKETS_S),
        *_bucket_columns(wait, has_wait, WAIT_BUCKETS_S),
        *(func.coalesce(func.sum(column), 0) for column in TOKEN_KINDS.values()),
    ]
    stats = RunStats()
    dur_counts = [0] * len(DURATION_BUCKETS_S)
    wait_counts = [0] * len(WAIT_BUCKETS_S)
    with store.engine.connect() as conn:
        rows = conn.execute(select(*columns).where(ended).group_by(runs_t.c.status)).all()
    for row in rows:
        status, count, dur_sum, wait_n, wait_sum = row[0], int(row[1]), float(row[2]), int(row[3] or 0), \
            float(row[4] or 0.0)
        stats.by_status[str(status)] = count
        stats.duration.count += count
        stats.duration.total += dur_sum
        stats.queue_wait.count += wait_n
        stats.queue_wait.total += wait_sum
        rest = row[5:]
        for i in range(len(DURATION_BUCKETS_S)):
            dur_counts[i] += int(rest[i] or 0)
        for i in range(len(WAIT_BUCKETS_S)):
            wait_counts[i] += int(rest[len(DURATION_BUCKETS_S) + i] or 0)
        sums = rest[len(DURATION_BUCKETS_S) + len(WAIT_BUCKETS_S):]
        for kind, total in zip(TOKEN_KINDS, sums, strict=True):
            stats.tokens[kind] += int(total or 0)
    stats.duration.buckets = list(zip(DURATION_BUCKETS_S, dur_counts, strict=True))
    stats.queue_wait.buckets = list(zip(WAIT_BUCKETS_S, wait_counts, strict=True))
    return stats
