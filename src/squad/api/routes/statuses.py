"""`GET /api/statuses`: the card statuses and their facts, as the store and the workers use them, so
the dashboard draws its lanes and buttons from the same table (`core.cards.STATUS_FACTS`)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from squad.api.schemas import StatusOut, error_responses
from squad.core.statuses import STATUS_FACTS, TRANSITIONS

router = APIRouter(tags=["cards"])

_STATUSES = [StatusOut(status=status, **asdict(facts), next=sorted(TRANSITIONS[status]))
             for status, facts in STATUS_FACTS.items()]


@router.get("/api/statuses", response_model=list[StatusOut], responses=error_responses())
def list_statuses() -> list[StatusOut]:
    """Every card status with its facts (final, active, cancellable, …) and where it may go next, in lane order."""
    return _STATUSES
