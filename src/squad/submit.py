"""A small Python API to submit cards: one card, a chain (each after the previous) or a group.

    from squad.submit import submit_chain
    submit_chain(settings, [{"card_id": "a", "title": "A"}, {"card_id": "b", "title": "B"}])

Dependencies are recorded in the store; the orchestrator releases each card once its dependencies
are DONE (a chain runs in order, a group in parallel). With `release=True` one orchestrator pass runs
at once, so the first cards are queued without waiting for the orchestrator's next tick.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from squad.actions.backlog import add_cards
from squad.actions.context import open_context
from squad.core.settings import Settings


def _add(settings: Settings, cards: Sequence[Mapping[str, Any]], *, release: bool) -> list[str]:
    with open_context(settings) as ctx:
        added = add_cards(ctx.store, [dict(c) for c in cards], settings=settings, events=ctx.events).added
        if release:
            from squad.orchestration.orchestrator import Orchestrator

            Orchestrator.for_producer(ctx.producer).tick()  # the producer never runs cards in this process
        return added


def submit_group(settings: Settings, cards: Sequence[Mapping[str, Any]], *, release: bool = False) -> list[str]:
    """Add independent cards (they run in parallel). All or nothing."""
    return _add(settings, cards, release=release)


def submit_chain(settings: Settings, cards: Sequence[Mapping[str, Any]], *, release: bool = False) -> list[str]:
    """Add cards that run one after the other: each depends on the previous one. All or nothing."""
    chained: list[dict[str, Any]] = []
    for index, card in enumerate(cards):
        item = dict(card)
        if index:
            deps = list(item.get("depends_on") or [])
            prev = chained[index - 1].get("card_id")
            if prev not in deps:
                deps.append(prev)
            item["depends_on"] = deps
        chained.append(item)
    return _add(settings, chained, release=release)
