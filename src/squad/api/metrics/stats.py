"""The numbers behind `GET /api/metrics`: the last hour of runs, from the store."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

from squad.api.schemas import MetricsOut, MinuteBucket, Percentiles
from squad.core.statuses import RunStatus
from squad.store.card_store import CardStore, now_s

WINDOW_S = 3600
FAILED_RUNS = frozenset({RunStatus.FAILED.value, RunStatus.LOST.value})


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    value = ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
    return round(value, 3)


def percentiles(values: Sequence[float]) -> Percentiles:
    """p50/p95 of some durations."""
    return Percentiles(p50=percentile(values, 50), p95=percentile(values, 95), count=len(values))


def compute_metrics(store: CardStore, *, now: float | None = None, window_s: int = WINDOW_S) -> MetricsOut:
    """Throughput per minute, queue wait and run time p50/p95, error rate, counts and cost."""
    at = now_s() if now is None else now
    since = at - window_s
    runs = store.finished_runs(since)
    first_minute = int(since // 60) * 60
    minutes = window_s // 60 + 1
    buckets = [MinuteBucket(minute=datetime.fromtimestamp(first_minute + 60 * i, tz=UTC)) for i in range(minutes)]
    waits: list[float] = []
    times: list[float] = []
    succeeded = failed = 0
    for run in runs:
        ended, started, queued = run["ended_at"], run["started_at"], run["queued_at"]
        bucket = buckets[min(len(buckets) - 1, max(0, int((ended - first_minute) // 60)))]
        if run["status"] == RunStatus.SUCCEEDED:
            succeeded += 1
            bucket.succeeded += 1
        elif run["status"] in FAILED_RUNS:
            failed += 1
            bucket.failed += 1
        if started is not None:
            times.append(max(0.0, ended - started))
            if queued is not None:
                waits.append(max(0.0, started - queued))
    settled = succeeded + failed
    return MetricsOut(
        window_s=window_s,
        generated_at=datetime.fromtimestamp(at, tz=UTC),
        runs_finished=len(runs),
        runs_succeeded=succeeded,
        runs_failed=failed,
        throughput_per_minute=round(len(runs) / (window_s / 60), 3),
        throughput=buckets,
        queue_wait_s=percentiles(waits),
        run_time_s=percentiles(times),
        error_rate=round(failed / settled, 4) if settled else 0.0,
        counts_by_status=store.count_by_status(),
        total_cost_usd=round(store.total_cost(), 6),
    )
