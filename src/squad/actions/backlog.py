"""Backlog files: import (all-or-nothing), export, validate. JSON or YAML: {"cards": [...]}.

`add_cards` here is the one way cards enter the store, whichever path they come by.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from squad.attempt.confinement import check_specs
from squad.core.cards import CardSpec, Status, parse_card
from squad.core.depgraph import find_cycle
from squad.core.errors import BacklogError
from squad.core.settings import Settings
from squad.live.events import Event, EventBus, status_event
from squad.store.card_store import CardStore


def load_file(path: Path) -> Any:
    """Read a JSON or YAML backlog file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BacklogError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BacklogError([f"{path}: cannot read: {exc}"]) from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            return yaml.safe_load(text)
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BacklogError([f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BacklogError([f"{where}: not valid YAML: {what}"]) from None


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


def parse_backlog(data: Any, settings: Settings | None = None) -> list[CardSpec]:
    """A backlog validated without any store (`backlog validate`, the demo): a dependency outside the
    file is unknown, and a cycle is looked for among its cards."""
    checked = check_backlog(data, settings)
    problems = list(checked.problems)
    problems += [f"card {card_id}: depends_on unknown card {dep!r}" for card_id, dep in checked.outside]
    specs = checked.specs
    cycle = find_cycle({s.card_id: [d for d in s.depends_on if d != s.card_id] for s in specs})
    if cycle:
        problems.append(f"card {cycle[0]}: dependency cycle {' -> '.join(cycle)}")
    if problems:
        raise BacklogError(problems)
    return specs


def validate_file(path: Path, settings: Settings | None = None) -> list[CardSpec]:
    """Check a file without touching any store."""
    return parse_backlog(load_file(path), settings=settings)


def import_file(store: CardStore, path: Path, *, update: bool = False, settings: Settings | None = None,
                events: EventBus | None = None) -> tuple[int, int]:
    """Import a file: everything or nothing. Returns how many cards were (added, updated)."""
    done = add_cards(store, load_file(path), settings=settings, events=events, update=update)
    return len(done.added), len(done.updated)


@dataclass(frozen=True)
class AddedCards:
    """What `add_cards` did: the cards it created, those (still TODO) it rewrote, and the TODO status
    event of each new card (published when it had an event bus)."""

    added: list[str]
    updated: list[str]
    events: list[Event]


def add_cards(store: CardStore, data: Any, *, settings: Settings | None, events: EventBus | None,
              update: bool = False) -> AddedCards:
    """The one way to add cards: backlog import, `squad card add`, `POST /api/cards` and `squad.submit`.

    `data` is what a backlog file holds (`{"cards": [...]}` or a list of card mappings). Every path
    gets the same validation (`check_backlog`, then the store's checks in the inserting transaction,
    every problem at once), the same all-or-nothing insert, the same `DuplicateCardError` for ids
    already stored (without `update`) and the same `status` event (TODO) for each new card, published
    on `events` when given (best effort, like every event).
    """
    checked = check_backlog(data, settings)
    added, updated = store.add_cards(checked.specs, update_existing=update, problems=checked.problems,
                                     depends=checked.outside)
    news = [status_event(card_id, Status.TODO) for card_id in added]
    if events is not None and news:
        events.publish_many(news)
    return AddedCards(added=added, updated=updated, events=news)


def export_backlog(store: CardStore) -> dict[str, Any]:
    """Every card's fields, in a form `import` takes back."""
    return {"cards": store.export_specs()}


def dump(data: dict[str, Any], path: Path | None) -> str:
    """Serialize as YAML for .yaml/.yml paths, JSON otherwise."""
    if path is not None and path.suffix.lower() in (".yaml", ".yml"):
        return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
