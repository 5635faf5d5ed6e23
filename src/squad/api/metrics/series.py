"""Time series behind `GET /api/metrics/series`: the dashboard's charts over a selectable window.

Two SQL queries whatever the window (the runs that ended in it or are still open, and the cards
queued now); bucketing, percentiles and queue depth are computed here.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy import or_, select

from squad.api.metrics.stats import FAILED_RUNS, percentile
from squad.api.schemas import DayCost, MetricsSeries, SeriesBucket, SquadCost
from squad.store.card_store import CardStore, now_s
from squad.store.tables import cards as cards_t
from squad.store.tables import runs as runs_t

#: Bucket counts the series aims for (a chart reads well with 30-120 bars).
TARGET_BUCKETS = 60
#: Bucket sizes the series may use, seconds (a "nice" size is picked for the window).
BUCKET_SIZES_S = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
DAY_S = 86_400
COST_DAYS = 14


def bucket_size_s(window_s: int) -> int:
    """The smallest nice bucket size giving at most ~TARGET_BUCKETS buckets over the window."""
    for size in BUCKET_SIZES_S:
        if window_s / size <= TARGET_BUCKETS * 1.5:
            return size
    return BUCKET_SIZES_S[-1]


def metrics_series(store: CardStore, *, window_s: int, now: float | None = None) -> MetricsSeries:
    """Per-bucket throughput, failures, retries, run time p50/p95, queue depth and cost over a window;
    cost per day (last COST_DAYS days) and per squad (the window)."""
    at = now_s() if now is None else now
    size = bucket_size_s(window_s)
    first = int((at - window_s) // size) * size
    count = math.ceil((at - first) / size)
    since = min(first, at - COST_DAYS * DAY_S)
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(runs_t.c.status, runs_t.c.attempt, runs_t.c.queued_at, runs_t.c.started_at,
                   runs_t.c.ended_at, runs_t.c.cost_usd, cards_t.c.squad)
            .select_from(runs_t.join(cards_t, runs_t.c.card_id == cards_t.c.card_id))
            .where(or_(runs_t.c.ended_at.is_(None), runs_t.c.ended_at >= since))).all()
        waiting = [float(q) for (q,) in conn.execute(
            select(cards_t.c.queued_at).where(cards_t.c.status == "QUEUED", cards_t.c.queued_at.is_not(None)))]
    buckets = [SeriesBucket(start=datetime.fromtimestamp(first + i * size, tz=UTC)) for i in range(count)]
    times: list[list[float]] = [[] for _ in range(count)]
    all_times: list[float] = []
    per_day: dict[str, float] = defaultdict(float)
    per_squad: dict[str, float] = defaultdict(float)
    # Queue depth at a bucket's end: runs queued before it and started after it, plus cards queued now.
    depth_marks: list[tuple[float, float]] = [(q, math.inf) for q in waiting]
    succeeded = failed = retries = 0
    for r in rows:
        if r.queued_at is not None and r.started_at is not None and r.started_at >= first:
            depth_marks.append((r.queued_at, r.started_at))
        if r.attempt > 1 and r.started_at is not None and r.started_at >= first:
            retries += 1
            idx = int((r.started_at - first) // size)
            if 0 <= idx < count:
                buckets[idx].retried += 1
        if r.ended_at is None:
            continue
        cost = float(r.cost_usd or 0.0)
        if cost:
            day = datetime.fromtimestamp(r.ended_at, tz=UTC).strftime("%Y-%m-%d")
            per_day[day] += cost
        if r.ended_at < first:
            continue
        idx = min(count - 1, int((r.ended_at - first) // size))
        bucket = buckets[idx]
        bucket.cost_usd += cost
        per_squad[r.squad or "(none)"] += cost
        if r.status == "succeeded":
            succeeded += 1
            bucket.succeeded += 1
        elif r.status in FAILED_RUNS:
            failed += 1
            bucket.failed += 1
        else:
            bucket.cancelled += 1
        if r.started_at is not None:
            duration = max(0.0, r.ended_at - r.started_at)
            times[idx].append(duration)
            all_times.append(duration)
    queued_at = sorted(q for q, _ in depth_marks)
    started_at = sorted(s for _, s in depth_marks)  # every start follows its queueing
    for i, bucket in enumerate(buckets):
        end = min(at, first + (i + 1) * size)
        bucket.run_time_p50 = percentile(times[i], 50)
        bucket.run_time_p95 = percentile(times[i], 95)
        settled = bucket.succeeded + bucket.failed
        bucket.error_rate = round(bucket.failed / settled, 4) if settled else None
        bucket.queue_depth = bisect_right(queued_at, end) - bisect_right(started_at, end)
        bucket.cost_usd = round(bucket.cost_usd, 6)
    settled = succeeded + failed
    today = int(at // DAY_S) * DAY_S
    days = [datetime.fromtimestamp(today - d * DAY_S, tz=UTC).strftime("%Y-%m-%d")
            for d in range(COST_DAYS - 1, -1, -1)]
    return MetricsSeries(
        window_s=window_s, bucket_s=size, generated_at=datetime.fromtimestamp(at, tz=UTC), buckets=buckets,
        succeeded=succeeded, failed=failed, retried=retries,
        error_rate=round(failed / settled, 4) if settled else 0.0,
        run_time_p50=percentile(all_times, 50), run_time_p95=percentile(all_times, 95),
        cost_per_day=[DayCost(day=d, cost_usd=round(per_day.get(d, 0.0), 6)) for d in days],
        cost_per_squad=sorted((SquadCost(squad=s, cost_usd=round(c, 6)) for s, c in per_squad.items()),
                              key=lambda x: -x.cost_usd),
    )
