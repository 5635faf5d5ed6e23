"""`GET /api/metrics` (JSON for the dashboard) and `GET /metrics` (Prometheus text)."""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Query, Response
from prometheus_client import CONTENT_TYPE_LATEST

from squad.api.deps import StateDep
from squad.api.metrics.prometheus import queue_depth
from squad.api.metrics.series import metrics_series as series
from squad.api.metrics.stats import WINDOW_S, compute_metrics
from squad.api.schemas import MetricsOut, MetricsSeries, error_responses
from squad.api.state import bounded
from squad.attempt.workspaces import disk_usage_bytes

router = APIRouter(tags=["metrics"])
MIN_WINDOW_S = 300
MAX_WINDOW_S = 30 * 86_400


@router.get("/api/metrics", response_model=MetricsOut, responses=error_responses())
async def metrics(state: StateDep) -> MetricsOut:
    """Throughput per minute over the last hour, queue wait and run time p50/p95, error rate,
    counts by status and total cost."""
    out = await to_thread.run_sync(compute_metrics, state.store)
    out.workspace_disk_bytes = await to_thread.run_sync(disk_usage_bytes, state.settings)
    if state.settings.use_celery:
        out.queue_depth = await bounded(queue_depth(state.broker, state.settings.cards_queue))
    return out


WindowQ = Annotated[int, Query(ge=MIN_WINDOW_S, le=MAX_WINDOW_S,
                               description="Seconds back from now (300 s to 30 days)")]


@router.get("/api/metrics/series", response_model=MetricsSeries, responses=error_responses(422))
async def metrics_series(state: StateDep, window_s: WindowQ = WINDOW_S) -> MetricsSeries:
    """Time series over a window, for charts: per bucket the runs succeeded / failed / cancelled /
    retried, run time p50/p95, error rate, queue depth and cost; cost per day and per squad."""
    return await to_thread.run_sync(lambda: series(state.store, window_s=window_s))


@router.get("/metrics", response_class=Response, responses={
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"},
    **error_responses()})
async def prometheus(state: StateDep) -> Response:
    """Prometheus exposition: squad_cards_total, squad_runs_total, squad_run_duration_seconds, …"""
    depth = await bounded(queue_depth(state.broker, state.settings.cards_queue)) if state.settings.use_celery else None
    body = await to_thread.run_sync(state.exposition.render, depth)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
