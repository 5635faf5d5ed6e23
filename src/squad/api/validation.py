"""Input problems as one line each, in the words of backlog import (`card X: field: message`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from squad.safetext import excerpt


def request_problems(errors: Sequence[Any], body: Any) -> list[str]:
    """FastAPI/pydantic validation errors as lines naming the card when the body has an id."""
    raw = body.get("card_id") if isinstance(body, dict) else None
    ident = excerpt(raw) if isinstance(raw, str) else None
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
