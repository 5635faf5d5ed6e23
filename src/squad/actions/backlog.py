"""Backlog files: import (all-or-nothing), export, validate. JSON or YAML: {"cards": [...]}.

`add_cards` here is the one way cards enter the store, whichever path they come by.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from squad.attempt.card_check import check_backlog
from squad.core.cards import CardSpec
from squad.core.depgraph import find_cycle
from squad.core.errors import BacklogError
from squad.core.settings import Settings
from squad.live.events import Event, EventBus, added_events
from squad.store.card_store import CardStore

# A backlog file is read whole, then each card validated: memory grows with it (1,000,000 small
# cards took 3.4 GB and 86 s). Bigger backlogs are split into several files (docs/security.md).
MAX_BACKLOG_BYTES = 16 * 1024 * 1024
MAX_BACKLOG_CARDS = 100_000
MAX_BACKLOG_DEPTH = 32         # a card is 3-4 levels deep; JSON nested 100k deep is an attack
MAX_BACKLOG_NODES = 5_000_000  # values walked, YAML aliases counted each time they are used


def load_file(path: Path) -> Any:
    """Read a JSON or YAML backlog file (at most MAX_BACKLOG_BYTES, MAX_BACKLOG_CARDS cards)."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_BACKLOG_BYTES + 1)  # bounded even for /dev/zero or a FIFO that never ends
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise BacklogError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BacklogError([f"{path}: cannot read: {exc}"]) from None
    if len(raw) > MAX_BACKLOG_BYTES:
        raise BacklogError([f"{path}: larger than {MAX_BACKLOG_BYTES // 2**20} MiB: split it into several "
                            f"files (at most {MAX_BACKLOG_CARDS:,} cards each) and import them one by one"])
    try:
        data = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
    except RecursionError:
        raise BacklogError([f"{path}: nested deeper than {MAX_BACKLOG_DEPTH} levels: not a backlog"]) from None
    except json.JSONDecodeError as exc:
        raise BacklogError([f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BacklogError([f"{where}: not valid YAML: {what}"]) from None
    check_shape(data, str(path))
    return data


def check_shape(data: Any, source: str) -> None:
    """Refuse a document nested deeper than MAX_BACKLOG_DEPTH, with more than MAX_BACKLOG_NODES values
    (YAML aliases expanding) or more than MAX_BACKLOG_CARDS cards, before anything walks it
    recursively (validation, error messages). Iterative: no depth can overflow it."""
    cards = data.get("cards") if isinstance(data, dict) else data
    if isinstance(cards, list) and len(cards) > MAX_BACKLOG_CARDS:
        raise BacklogError([f"{source}: {len(cards):,} cards, more than {MAX_BACKLOG_CARDS:,} in one backlog: "
                            "split it into several files and import them one by one"])
    stack: list[tuple[Any, int]] = [(data, 1)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if depth > MAX_BACKLOG_DEPTH:
            raise BacklogError([f"{source}: nested deeper than {MAX_BACKLOG_DEPTH} levels: not a backlog"])
        if nodes > MAX_BACKLOG_NODES:
            raise BacklogError([f"{source}: more than {MAX_BACKLOG_NODES:,} values (YAML aliases count each "
                                "time they are used): not a backlog"])
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


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
    """What `add_cards` did: the cards it created, those (still TODO) it rewrote, and the events that
    name the new cards (published when it had an event bus): `added_events`."""

    added: list[str]
    updated: list[str]
    events: list[Event]


def add_cards(store: CardStore, data: Any, *, settings: Settings | None, events: EventBus | None,
              update: bool = False) -> AddedCards:
    """The one way to add cards: backlog import, `squad card add`, `POST /api/cards` and `squad.submit`.

    `data` is what a backlog file holds (`{"cards": [...]}` or a list of card mappings). Every path
    gets the same validation (`check_backlog`, then the store's checks in the inserting transaction,
    every problem at once), the same all-or-nothing insert, the same `DuplicateCardError` for ids
    already stored (without `update`) and the same events naming the new cards, published on `events`
    when given (best effort, like every event): a `status` event (TODO) for one card, an `added`
    event per up to ADDED_EVENT_MAX_IDS cards for more (`squad.live.events.added_events`).
    """
    checked = check_backlog(data, settings)
    added, updated = store.add_cards(checked.specs, update_existing=update, problems=checked.problems,
                                     depends=checked.outside)
    news = added_events(added) if added else []
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
