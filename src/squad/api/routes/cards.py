"""Cards and runs: list, create, read, with task state (`/api/cards/enhanced`)."""

from __future__ import annotations

import re
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Query, Response, status
from pydantic import StringConstraints

from squad.actions.backlog import add_cards
from squad.agents.prompts import read_prompt_file, render_prompt
from squad.api.deps import Authorized, CardIdDep, RunIdDep, StateDep, StoreDep
from squad.api.schemas import CardDetail, CardIn, EnhancedCard, PromptOut, RunLog, error_responses
from squad.api.state import AppState, bounded
from squad.api.task_view import ENHANCED_LIST, enhance, page_with_runs
from squad.core.cards import CARD_ID_RE, Card, Run
from squad.core.errors import NotFoundError, SquadError
from squad.core.statuses import Status
from squad.live.events import publish_async
from squad.store.team_store import TeamStore
from squad.team.audit import card_actions

router = APIRouter(tags=["cards"])
MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_OFFSET = 1_000_000_000
MAX_IDS = 1000
_NO_NUL = re.compile(r"^[^\x00]*$").pattern

StatusQ = Annotated[Status | None, Query(description="Only cards in this status")]
SquadQ = Annotated[str | None, Query(max_length=100, pattern=_NO_NUL, description="Only cards of this squad")]
LimitQ = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size (the total is in `X-Total-Count`)")]
OffsetQ = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Cards to skip")]


@router.get("/api/cards", response_model=list[Card], responses=error_responses(422))
def list_cards(store: StoreDep, response: Response, status: StatusQ = None, squad: SquadQ = None,
               limit: LimitQ = DEFAULT_PAGE, offset: OffsetQ = 0) -> list[Card]:
    """A page of cards, most urgent first, then oldest; the matching total is in `X-Total-Count`."""
    response.headers["X-Total-Count"] = str(store.count_cards(status=status, squad=squad or None))
    return store.list_cards(status=status, squad=squad or None, limit=limit, offset=offset)


@router.post("/api/cards", status_code=status.HTTP_201_CREATED, response_model=Card,
             dependencies=[Authorized], responses=error_responses(401, 409, 422))
async def create_card(body: CardIn, state: StateDep) -> Card:
    """Add one card, exactly like a backlog import (`backlog.add_cards`): 422 lists every problem,
    409 names an id already in the store."""
    done = await to_thread.run_sync(lambda: add_cards(state.store, [body.model_dump()], settings=state.settings,
                                                      events=None))
    for event in done.events:  # on the API's own (asyncio) client
        await bounded(publish_async(state.events, state.keys, event))
    return await to_thread.run_sync(state.store.get_card, done.added[0])


CardIdsQ = Annotated[list[Annotated[str, StringConstraints(pattern=CARD_ID_RE.pattern)]], Query(
    alias="card_id", max_length=MAX_IDS,
    description="Only these cards (repeat the parameter; at most 1000); unknown ids are left out")]


async def total_header(state: AppState, got: int, *, limit: int, offset: int, status: Status | None,
                       squad: str | None) -> dict[str, str]:
    """`X-Total-Count` of a page of `got` cards: a page that is not full tells its own total."""
    total = offset + got if got < limit and (got or not offset) else await to_thread.run_sync(
        lambda: state.store.count_cards(status=status, squad=squad or None))
    return {"X-Total-Count": str(total)}


@router.get("/api/cards/enhanced", response_model=list[EnhancedCard], responses=error_responses(422))
async def enhanced_cards(state: StateDep, status: StatusQ = None, squad: SquadQ = None,
                         limit: LimitQ = DEFAULT_PAGE, offset: OffsetQ = 0, card_ids: CardIdsQ = []) -> Response:  # noqa: B006 (FastAPI copies defaults)
    """A page of cards with `celery_task`, `logs_available` and the board's extras (three SQL queries
    and two Redis round trips); the matching total is in `X-Total-Count` (without `card_id`)."""
    ids = list(card_ids) or None
    cards, runs, extras = await to_thread.run_sync(lambda: page_with_runs(
        state.store, status=status, squad=squad or None, limit=limit, offset=offset, card_ids=ids))
    page = await enhance(cards, runs, results=state.results, events=state.events, keys=state.keys,
                         settings=state.settings, extras=extras)
    headers = {} if ids is not None else await total_header(state, len(cards), limit=limit, offset=offset,
                                                           status=status, squad=squad)
    # Already validated by `enhance`: serialize once, skipping FastAPI's second validation pass.
    return Response(ENHANCED_LIST.dump_json(page), media_type="application/json", headers=headers)


@router.get("/api/cards/{card_id}", response_model=CardDetail, responses=error_responses(404))
def get_card(card_id: CardIdDep, store: StoreDep) -> CardDetail:
    """One card with its runs."""
    card = store.get_card(card_id)
    return CardDetail.model_validate({**card.__dict__, "runs": store.list_runs(card_id),
                                      "actions": card_actions(TeamStore(store), card_id)})


@router.get("/api/cards/{card_id}/runs", response_model=list[Run], responses=error_responses(404))
def card_runs(card_id: CardIdDep, store: StoreDep) -> list[Run]:
    """Every attempt of a card, first first."""
    return store.list_runs(card_id)


@router.get("/api/runs/{run_id}/log", response_model=RunLog, responses=error_responses(404, 422))
def run_log(run_id: RunIdDep, store: StoreDep) -> RunLog:
    """The archived log of one run ('' while it runs)."""
    run = store.get_run(run_id)
    return RunLog(run_id=run.id, card_id=run.card_id, attempt=run.attempt, status=run.status,
                  log=store.run_log(run_id))


AttemptQ = Annotated[int | None, Query(ge=1, le=10_000, description="Attempt number (default: the latest)")]


def _render_again(state: AppState, card: Card, attempt: int) -> str | None:
    """The prompt of a past attempt, rendered from the card and the previous attempt's error."""
    runs = {run.attempt: run for run in state.store.list_runs(card.card_id)}
    if attempt not in runs:
        return None
    previous = runs.get(attempt - 1)
    try:
        return render_prompt(state.settings.prompt_template, card.model_dump(mode="json"), attempt,
                             previous.error if previous is not None else None)
    except SquadError:
        return None


@router.get("/api/cards/{card_id}/prompt", response_model=PromptOut, responses=error_responses(404, 422))
def card_prompt(card_id: CardIdDep, state: StateDep, attempt: AttemptQ = None) -> PromptOut:
    """The prompt an attempt was sent, as the worker wrote it (readable when the API shares the
    worker's `SQUAD_WORKDIR`, as with `squad up`)."""
    card = state.store.get_card(card_id)
    number = attempt or card.attempts
    if number < 1:
        raise NotFoundError(f"card {card_id} has not run yet")
    if number > card.attempts:  # no file of an attempt that never was is read, whoever put it there
        raise NotFoundError(f"card {card_id} has run {card.attempts} attempt(s): there is no attempt {number}")
    text = read_prompt_file(state.settings.workdir, card_id, number)
    if text is None:  # removed after its attempt (docs/security.md): render it again from the card
        text = _render_again(state, card, number)
    if text is None:
        raise NotFoundError(f"the prompt of card {card_id} attempt {number} is not on this machine")
    return PromptOut(card_id=card_id, attempt=number, prompt=text)
