"""`GET /api/board`: the compact shape of every card on the dashboard's board."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Response
from pydantic_core import to_json

from squad.api.board import add_last_output, board_rows
from squad.api.deps import StateDep
from squad.api.routes.cards import CardIdsQ, LimitQ, OffsetQ, SquadQ, StatusQ, total_header
from squad.api.schemas import BoardCard, error_responses

router = APIRouter(tags=["cards"])
DEFAULT_PAGE = 100


@router.get("/api/board", response_model=list[BoardCard], responses=error_responses(422))
async def board(state: StateDep, status: StatusQ = None, squad: SquadQ = None, limit: LimitQ = DEFAULT_PAGE,
                offset: OffsetQ = 0, card_ids: CardIdsQ = []) -> Response:  # noqa: B006 (FastAPI copies defaults)
    """A page of cards (most urgent first, then oldest) with just what a board card shows: one SQL
    query and one Redis round trip; the matching total is in `X-Total-Count` (without `card_id`)."""
    ids = list(card_ids) or None
    rows = await to_thread.run_sync(lambda: board_rows(
        state.store, state.settings, status=status, squad=squad or None, limit=limit, offset=offset, card_ids=ids))
    await add_last_output(rows, state.events, state.keys)
    headers = {} if ids is not None else await total_header(state, len(rows), limit=limit, offset=offset,
                                                           status=status, squad=squad)
    # Built from our own store's rows: serialized once, without a validation pass per card.
    return Response(to_json(rows), media_type="application/json", headers=headers)
