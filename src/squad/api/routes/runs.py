"""Run history across cards (`GET /api/runs`), paged on the server for the dashboard's history view."""

from __future__ import annotations

from typing import Annotated, Literal

from anyio import to_thread
from fastapi import APIRouter, Query, Response

from squad.api.deps import StoreDep
from squad.api.history import run_history
from squad.api.schemas import HistoryRun, error_responses

router = APIRouter(tags=["runs"])
MAX_HISTORY_PAGE = 1000
_NO_NUL = r"^[^\x00]*$"

RunStatusQ = Annotated[Literal["running", "succeeded", "failed", "lost", "cancelled"] | None,
                       Query(description="Only runs with this outcome")]
TextQ = Annotated[str | None, Query(max_length=100, pattern=_NO_NUL, description="Free text on id or title")]


@router.get("/api/runs", response_model=list[HistoryRun], responses=error_responses(422))
async def list_runs(
    store: StoreDep,
    response: Response,
    status: RunStatusQ = None,
    squad: Annotated[str | None, Query(max_length=100, pattern=_NO_NUL)] = None,
    agent: Annotated[str | None, Query(max_length=100, pattern=_NO_NUL)] = None,
    q: TextQ = None,
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> list[HistoryRun]:
    """Runs of every card, newest first, with their card's title, squad and agent; the total
    matching count is in `X-Total-Count`."""
    runs, total = await to_thread.run_sync(lambda: run_history(
        store, status=status, squad=squad or None, agent=agent or None, text=(q or "").strip() or None,
        limit=limit, offset=offset))
    response.headers["X-Total-Count"] = str(total)
    return runs
