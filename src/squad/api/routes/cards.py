"""Cards and runs: list, create, read, with task state (`/api/cards/enhanced`)."""

from __future__ import annotations

import re
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Query, Response, status

from squad.api.deps import Authorized, CardIdDep, RunIdDep, StateDep, StoreDep
from squad.api.routes import errors
from squad.api.schemas import CardDetail, CardIn, EnhancedCard, RunLog
from squad.api.state import bounded
from squad.api.task_view import ENHANCED_LIST, enhance, page_with_runs
from squad.cards import Card, Run, Status, check_storable
from squad.constants import TASK_UPDATES_MAXLEN, TASK_UPDATES_STREAM
from squad.events import EventBus

router = APIRouter(tags=["cards"])
MAX_PAGE = 10_000
MAX_OFFSET = 1_000_000_000
_NO_NUL = re.compile(r"^[^\x00]*$").pattern

StatusQ = Annotated[Status | None, Query(description="Only cards in this status")]
SquadQ = Annotated[str | None, Query(max_length=100, pattern=_NO_NUL, description="Only cards of this squad")]
LimitQ = Annotated[int | None, Query(ge=1, le=MAX_PAGE, description="Page size (default: every card)")]
OffsetQ = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Cards to skip")]


@router.get("/api/cards", response_model=list[Card], responses=errors(422))
def list_cards(store: StoreDep, status: StatusQ = None, squad: SquadQ = None, limit: LimitQ = None,
               offset: OffsetQ = 0) -> list[Card]:
    """Cards, most urgent first, then oldest."""
    return store.list_cards(status=status, squad=squad or None, limit=limit, offset=offset)


@router.post("/api/cards", status_code=status.HTTP_201_CREATED, response_model=Card,
             dependencies=[Authorized], responses=errors(401, 409, 422))
async def create_card(body: CardIn, state: StateDep) -> Card:
    """Add one card, validated exactly like a backlog import (422 lists every problem)."""
    spec = body.spec()
    check_storable(spec)
    await to_thread.run_sync(state.store.add_cards, [spec])
    card = await to_thread.run_sync(state.store.get_card, spec.card_id)
    event = EventBus.make_event("status", card.card_id, None, status=card.status.value)
    await bounded(state.events.xadd(TASK_UPDATES_STREAM, event,
                                    maxlen=TASK_UPDATES_MAXLEN, approximate=True))
    return card


@router.get("/api/cards/enhanced", response_model=list[EnhancedCard], responses=errors(422))
async def enhanced_cards(state: StateDep, status: StatusQ = None, squad: SquadQ = None, limit: LimitQ = None,
                         offset: OffsetQ = 0) -> Response:
    """Cards with `celery_task` and `logs_available`: two SQL queries and two Redis round trips."""
    cards, runs = await to_thread.run_sync(lambda: page_with_runs(
        state.store, status=status, squad=squad or None, limit=limit, offset=offset))
    page = await enhance(cards, runs, results=state.results, events=state.events,
                         default_max_retries=state.settings.max_retries)
    # Already validated by `enhance`: serialize once, skipping FastAPI's second validation pass.
    return Response(ENHANCED_LIST.dump_json(page), media_type="application/json")


@router.get("/api/cards/{card_id}", response_model=CardDetail, responses=errors(404))
def get_card(card_id: CardIdDep, store: StoreDep) -> CardDetail:
    """One card with its runs."""
    card = store.get_card(card_id)
    return CardDetail.model_validate({**card.__dict__, "runs": store.list_runs(card_id)})


@router.get("/api/cards/{card_id}/runs", response_model=list[Run], responses=errors(404))
def card_runs(card_id: CardIdDep, store: StoreDep) -> list[Run]:
    """Every attempt of a card, first first."""
    return store.list_runs(card_id)


@router.get("/api/runs/{run_id}/log", response_model=RunLog, responses=errors(404, 422))
def run_log(run_id: RunIdDep, store: StoreDep) -> RunLog:
    """The archived log of one run ('' while it runs)."""
    run = store.get_run(run_id)
    return RunLog(run_id=run.id, card_id=run.card_id, attempt=run.attempt, status=run.status,
                  log=store.run_log(run_id))
