"""Answering a card's question (`ask_human`, docs/agents.md): `squad answer`, `POST
/api/cards/{card_id}/answer` and the dashboard's answer box all come here."""

from __future__ import annotations

from squad.core.cards import Card, check_storable_text
from squad.core.errors import BacklogError, ConflictError
from squad.core.statuses import Status
from squad.live.events import EventBus, answer_event, status_event
from squad.store import family
from squad.store.card_store import CardStore

ANSWER_MAX_CHARS = 16 * 1024


def answer_card(store: CardStore, events: EventBus | None, card_id: str, text: str, *, by: str | None = None) -> Card:
    """Give a NEEDS_INPUT card's agent its answer: the card is IN_PROGRESS again. ConflictError (409,
    exit 2) when the card waits for no answer; BacklogError (422, exit 2) for an empty or oversized one."""
    if not text.strip():
        raise BacklogError(["answer: must not be empty"])
    if len(text) > ANSWER_MAX_CHARS:
        raise BacklogError([f"answer: at most {ANSWER_MAX_CHARS} characters"])
    check_storable_text("answer", text)
    before = store.get_card(card_id)  # NotFoundError for an unknown card
    card = family.answer(store, card_id, text)
    if card is None:
        raise ConflictError(f"card {card_id} is {store.get_card(card_id).status}: it waits for no answer")
    if events is not None:
        events.publish_many([answer_event(card_id, before.celery_task_id, answer=text, by=by),
                             status_event(card_id, Status.IN_PROGRESS, before.celery_task_id, attempt=card.attempts)])
    return card


def questions(store: CardStore) -> list[Card]:
    """Every card waiting for a person's answer (NEEDS_INPUT), most urgent first."""
    return store.list_cards(status=Status.NEEDS_INPUT.value)
