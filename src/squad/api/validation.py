"""Input problems as one line each, in the words of backlog import (`card X: field: message`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from squad.cards import CardSpec
from squad.errors import BacklogError

#: Column widths of the store (PostgreSQL enforces them; SQLite would silently accept more).
_MAX_LEN = {"squad": 100, "agent": 100}


def request_problems(errors: Sequence[Any], body: Any) -> list[str]:
    """FastAPI/pydantic validation errors as lines naming the card when the body has an id."""
    ident = body.get("card_id") if isinstance(body, dict) and isinstance(body.get("card_id"), str) else None
    lines: list[str] = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        where = loc[0] if loc else "request"
        field = ".".join(loc[1:]) or where
        msg = "unknown field" if err.get("type") == "extra_forbidden" else str(err.get("msg", "invalid"))
        if where == "body" and ident is not None:
            lines.append(f"card {ident}: {field}: {msg}")
        elif where == "body":
            lines.append(f"body: {field}: {msg}" if field != "body" else f"body: {msg}")
        else:
            lines.append(f"{where} {field}: {msg}" if field != where else f"{where}: {msg}")
    return lines


def _strings(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, list):
        return [pair for i, item in enumerate(value) for pair in _strings(item, f"{path}.{i}")]
    return []


def check_storable(spec: CardSpec) -> None:
    """Reject what the store cannot hold (NUL characters, lone surrogates, over-long names)."""
    problems: list[str] = []
    for name in CardSpec.model_fields:
        for path, text in _strings(getattr(spec, name), name):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                problems.append(f"card {spec.card_id}: {path}: not valid UTF-8 text")
                continue
            if "\x00" in text:
                problems.append(f"card {spec.card_id}: {path}: must not contain NUL characters")
    for name, limit in _MAX_LEN.items():
        value = getattr(spec, name)
        if isinstance(value, str) and len(value) > limit:
            problems.append(f"card {spec.card_id}: {name}: at most {limit} characters")
    if problems:
        raise BacklogError(problems)
