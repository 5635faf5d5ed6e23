"""Sub-cards an attempt creates (`create_cards`) and the parents that wait for them (docs/agents.md).

Sub-cards are validated like a backlog import (`attempt.card_check`, then the store's checks in
the inserting transaction: all or nothing, one line per problem), inherit the parent's squad,
agent, workspace and limits unless given, and are bounded: at most `MAX_PER_CALL` a call,
`Settings.subcard_limit` per parent in all, and `Settings.subcard_depth` levels below a card
that no agent created.
"""

from __future__ import annotations

from typing import Any

import structlog

from squad.attempt.card_check import check_backlog
from squad.core.cards import Card
from squad.core.errors import BacklogError, DuplicateCardError
from squad.core.settings import Settings
from squad.live.events import EventBus, added_events, status_event
from squad.store import family
from squad.store.card_store import CardStore

log = structlog.get_logger(__name__)
MAX_PER_CALL = 100
#: what an agent may set on a sub-card (docs/agents.md)
AGENT_FIELDS = frozenset({"title", "description", "card_id", "priority", "depends_on", "acceptance_criteria"})
#: what a sub-card takes from its parent
INHERITED = ("squad", "agent", "repo", "base", "review", "time_limit", "soft_time_limit", "max_retries")


def create_subcards(settings: Settings, store: CardStore, events: EventBus | None, parent: Card,
                    items: Any) -> list[str]:
    """Add the sub-cards of `parent`; their ids, or BacklogError naming every problem."""
    if not isinstance(items, list) or not items:
        raise BacklogError(["cards: must be a non-empty list of card objects"])
    if len(items) > MAX_PER_CALL:
        raise BacklogError([f"cards: at most {MAX_PER_CALL} sub-cards per call, got {len(items)}"])
    above = family.ancestors(store, parent.card_id, settings.subcard_depth)
    if len(above) >= settings.subcard_depth:
        raise BacklogError([f"card {parent.card_id} is {len(above)} level(s) deep: sub-cards may nest at most "
                            f"{settings.subcard_depth} level(s) (subcard_depth)"])
    have = family.child_count(store, parent.card_id)
    if have + len(items) > settings.subcard_limit:
        raise BacklogError([f"card {parent.card_id} has {have} sub-card(s): at most {settings.subcard_limit} "
                            f"in all (subcard_limit)"])
    problems: list[str] = []
    cards: list[dict[str, Any]] = []
    number = family.next_child_number(store, parent.card_id)
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(f"cards[{index}]: must be an object, got {type(item).__name__}")
            continue
        unknown = sorted(set(item) - AGENT_FIELDS)
        if unknown:
            problems += [f"cards[{index}]: {name}: unknown field" for name in unknown]
            continue
        card = {name: getattr(parent, name) for name in INHERITED if getattr(parent, name) is not None}
        card.update(item)
        if "card_id" not in item:
            card["card_id"] = f"{parent.card_id}.{number}"
            number += 1
        cards.append(card)
    checked = check_backlog({"cards": cards}, settings)
    try:
        added, _ = store.add_cards(checked.specs, problems=problems + checked.problems, depends=checked.outside,
                                   parent=parent.card_id)
    except DuplicateCardError as exc:
        raise BacklogError([f"card {card_id}: already exists" for card_id in exc.card_ids]) from None
    if events is not None and added:
        events.publish_many(added_events(added))
    return added


def settle(store: CardStore, events: EventBus | None, card_id: str) -> None:
    """A WAITING card whose sub-cards settled moves on (DONE, or FAILED); then so may its own parent."""
    current: str | None = card_id
    for _ in range(64):  # a chain of parents, bounded by the id length anyway
        if current is None:
            return
        moved = family.settle_parent(store, current)
        if moved is None:
            return
        new, error = moved
        log.info("parent settled", card_id=current, status=new.value)
        if events is not None:
            events.publish(status_event(current, new, error=error))
        current = store.get_card(current).parent


def settle_waiting(store: CardStore, events: EventBus | None) -> list[str]:
    """Settle every WAITING card that can (the orchestrator's safety net); the ones that moved."""
    moved = []
    for card_id in family.waiting_parents(store):
        before = store.get_card(card_id).status
        settle(store, events, card_id)
        if store.get_card(card_id).status != before:
            moved.append(card_id)
    return moved
