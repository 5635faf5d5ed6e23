"""`GET /api/workers`: Celery workers as seen by the last broadcast (cached for a moment)."""

from __future__ import annotations

from datetime import UTC, datetime

from anyio import to_thread
from fastapi import APIRouter

from squad.api.deps import StateDep
from squad.api.history import leases_by_worker
from squad.api.schemas import WorkerOut, WorkersOut, error_responses

router = APIRouter(tags=["workers"])


@router.get("/api/workers", response_model=WorkersOut, responses=error_responses())
async def workers(state: StateDep) -> WorkersOut:
    """Name, online/offline, active cards, leases held, queues, concurrency, processed count and last
    heartbeat of every worker."""
    snap = await state.monitor.snapshot()
    leases = await to_thread.run_sync(leases_by_worker, state.store)
    return WorkersOut(status=snap.status, checked_at=snap.checked_at_dt(), workers=[
        WorkerOut(name=w.name, status="online" if w.online else "offline", active_cards=w.active_cards,
                  processed=w.processed, concurrency=w.concurrency, queues=w.queues,
                  leases=leases.get(w.name, []),
                  last_heartbeat=None if w.last_seen is None else datetime.fromtimestamp(w.last_seen, tz=UTC))
        for w in snap.workers])
