"""`GET /api/metrics` (JSON for the dashboard) and `GET /metrics` (Prometheus text)."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from squad.api.deps import StateDep
from squad.api.metrics.prometheus import queue_depth
from squad.api.metrics.stats import compute_metrics
from squad.api.routes import errors
from squad.api.schemas import MetricsOut
from squad.api.state import bounded

router = APIRouter(tags=["metrics"])


@router.get("/api/metrics", response_model=MetricsOut, responses=errors())
async def metrics(state: StateDep) -> MetricsOut:
    """Throughput per minute over the last hour, queue wait and run time p50/p95, error rate,
    counts by status and total cost."""
    out = await to_thread.run_sync(compute_metrics, state.store)
    if state.settings.use_celery:
        out.queue_depth = await bounded(queue_depth(state.broker))
    return out


@router.get("/metrics", response_class=Response, responses={
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"},
    **errors()})
async def prometheus(state: StateDep) -> Response:
    """Prometheus exposition: squad_cards, squad_runs_total, squad_run_duration_seconds, …"""
    depth = await bounded(queue_depth(state.broker)) if state.settings.use_celery else None
    body = await to_thread.run_sync(state.exposition.render, depth)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
