"""The WebSocket event contract as docs/api.md states it, parsed from the doc so code and doc cannot drift.

The unit tests hold `squad.live.events`' constructors to it, the integration tests hold what real workers
write to it: if the doc and the code drift apart, one of them fails.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from support.paths import DOCS

API_DOC = DOCS / "api.md"
EVERY_EVENT = "every event"
_FIELD = re.compile(r"(?:^|,\s*)`([a-z_]+)`")  # a field name opens the cell or follows a comma


@dataclass(frozen=True)
class Fields:
    """The fields one kind of event always has, and those it has when they are known."""

    always: frozenset[str]
    when_known: frozenset[str]

    @property
    def all(self) -> frozenset[str]:
        return self.always | self.when_known


def websocket_section() -> str:
    """docs/api.md from its "WebSocket" heading to the next heading of the same level."""
    text = API_DOC.read_text(encoding="utf-8")
    start = text.index("## WebSocket")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def documented_fields() -> dict[str, Fields]:
    """The fields table: `every event` and one entry per event type."""
    table: dict[str, Fields] = {}
    for line in websocket_section().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.strip().startswith("|") or len(cells) != 3:
            continue
        kind = cells[0].strip("`")
        if kind != EVERY_EVENT and not re.fullmatch(r"`[a-z_]+`", cells[0]):
            continue  # the header row and its rule
        table[kind] = Fields(frozenset(_FIELD.findall(cells[1])), frozenset(_FIELD.findall(cells[2])))
    assert EVERY_EVENT in table and len(table) > 1, f"no event fields table in {API_DOC}"
    return table


def event_fields(event_type: str) -> Fields:
    """All the fields an event of this type has (the common ones included)."""
    table = documented_fields()
    own, common = table[event_type], table[EVERY_EVENT]
    return Fields(common.always | own.always, common.when_known | own.when_known)


def documented_numbers() -> set[str]:
    """The fields the doc says arrive as JSON numbers (`Numbers: ...`)."""
    found = re.search(r"Numbers: ([^;\n]*)", websocket_section())
    assert found, f"no 'Numbers:' line in {API_DOC}"
    return set(re.findall(r"`([a-z_]+)`", found.group(1)))


def documented_lists() -> set[str]:
    """The fields the doc says arrive as JSON lists of strings (`lists of strings: ...`)."""
    found = re.search(r"lists of strings: ([^;\n]*)", websocket_section())
    return set(re.findall(r"`([a-z_]+)`", found.group(1))) if found else set()


def documented_examples() -> list[dict[str, Any]]:
    """The example events of the ```json block, one JSON object after another."""
    block = re.search(r"```json\n(.*?)```", websocket_section(), re.S)
    assert block, f"no JSON examples in {API_DOC}"
    text, decoder, out, pos = block.group(1), json.JSONDecoder(), [], 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return out
        obj, pos = decoder.raw_decode(text, pos)
        out.append(obj)


def documented_greeting() -> dict[str, Any]:
    """The first message as the doc shows it."""
    found = re.search(r"first message is `(\{.*?\})`", websocket_section())
    assert found, f"no first message in {API_DOC}"
    return dict(json.loads(found.group(1)))


def problems(event: dict[str, Any]) -> list[str]:
    """How one event as a client receives it differs from the doc ([] when it matches)."""
    table = documented_fields()
    if event.get("type") not in table:
        return [f"type {event.get('type')!r} is not documented"]
    fields, numbers, lists = event_fields(event["type"]), documented_numbers(), documented_lists()
    out = [f"missing {name}" for name in sorted(fields.always - set(event))]
    out += [f"undocumented {name}" for name in sorted(set(event) - fields.all)]
    for name, value in event.items():
        if name in lists:
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                out.append(f"{name} is {type(value).__name__}, the doc says a list of strings")
            continue
        wanted, said = ((int, float), "a number") if name in numbers else ((str,), "a string")
        if not isinstance(value, wanted) or isinstance(value, bool):
            out.append(f"{name} is {type(value).__name__}, the doc says {said}")
    return out
