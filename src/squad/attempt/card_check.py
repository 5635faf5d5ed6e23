"""A backlog's cards checked on their own, before the store sees them (every problem at once).

Here, below `actions`, so that every path adding cards — a backlog import (`actions.backlog`) and an
attempt's `create_cards` (`attempt.channel`) — validates alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from squad.attempt.confinement import check_specs
from squad.core.cards import CardSpec, parse_card
from squad.core.errors import BacklogError
from squad.core.settings import Settings

__all__ = ["CheckedBacklog", "check_backlog"]


@dataclass(frozen=True)
class CheckedBacklog:
    """A backlog checked without the store: its cards (each id once), every problem found, and each
    (card_id, dependency) naming a card outside the file, which only the store can confirm."""

    specs: list[CardSpec]
    problems: list[str]
    outside: list[tuple[str, str]]


def check_backlog(data: Any, settings: Settings | None = None) -> CheckedBacklog:
    """Check a whole backlog on its own, every problem at once (one line each, naming the card): its
    shape, each card's fields, ids given twice, cards depending on themselves and, with `settings`,
    what this installation allows (workdir inside the allowed roots, time limits under the hard
    limit). Dependencies outside the file are left to the store (`CardStore.add_cards`)."""
    if isinstance(data, list):
        raw = data
    elif isinstance(data, dict) and isinstance(data.get("cards"), list):
        raw = data["cards"]
    else:
        raise BacklogError(['backlog must be an object {"cards": [ ... ]}'])
    problems: list[str] = []
    specs: list[CardSpec] = []
    seen: dict[str, int] = {}
    duplicates: list[CardSpec] = []
    for index, item in enumerate(raw):
        try:
            spec = parse_card(item, where=f"cards[{index}]")
        except BacklogError as exc:
            problems.extend(exc.problems)
            continue
        if spec.card_id in seen:
            problems.append(f"card {spec.card_id}: duplicate card_id (also cards[{seen[spec.card_id]}])")
            duplicates.append(spec)  # its depends_on is still checked
            continue
        seen[spec.card_id] = index
        specs.append(spec)
    outside: list[tuple[str, str]] = []
    for spec in [*specs, *duplicates]:
        for dep in spec.depends_on:
            if dep == spec.card_id:
                problems.append(f"card {spec.card_id}: depends on itself")
            elif dep not in seen:
                outside.append((spec.card_id, dep))
    if settings is not None:
        try:
            check_specs(specs, settings)
        except BacklogError as exc:
            problems.extend(exc.problems)
    return CheckedBacklog(specs, problems, outside)
