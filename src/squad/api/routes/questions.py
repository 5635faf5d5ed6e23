"""Questions agents ask a person (`ask_human`, docs/agents.md): the cards waiting, and the answer."""

from __future__ import annotations

from fastapi import APIRouter, Request

from squad.actions.answer import answer_card, questions
from squad.api.auth import principal_of
from squad.api.deps import Authorized, CardIdDep, StateDep
from squad.api.schemas import AnswerIn, AnswerOut, error_responses
from squad.core.cards import Card

router = APIRouter(tags=["questions"])


@router.get("/api/questions", response_model=list[Card], responses=error_responses())
def waiting_questions(state: StateDep) -> list[Card]:
    """Cards whose agent waits for a person's answer (NEEDS_INPUT), each with its `question` and `choices`."""
    return questions(state.store)


@router.post("/api/cards/{card_id}/answer", response_model=AnswerOut, dependencies=[Authorized],
             responses=error_responses(401, 404, 409, 422))
def answer(card_id: CardIdDep, body: AnswerIn, state: StateDep, request: Request) -> AnswerOut:
    """NEEDS_INPUT → IN_PROGRESS: the waiting agent's `ask_human` returns `answer`. 409 when the card
    waits for no answer."""
    producer = state.producers.get()
    principal = principal_of(request.scope)  # who answered: the token's name (docs/team.md)
    card = answer_card(producer.store, producer.events, card_id, body.answer,
                       by=principal.name if principal is not None else "api")
    return AnswerOut(status="answered", card_id=card_id, message=f"card {card_id} answered", card=card)
