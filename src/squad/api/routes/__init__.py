"""One router per resource; `errors()` documents the error answers a route can give."""

from __future__ import annotations

from typing import Any

from squad.api.schemas import ErrorOut

_DESCRIPTIONS = {
    400: "Not allowed in the card's current status",
    401: "Missing or wrong API token",
    404: "Unknown card or run",
    409: "Conflicts with the current state (e.g. the card exists)",
    422: "Invalid input; `problems` lists every problem",
    503: "A backing service (database, Redis) does not answer",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error codes (every error body is an `ErrorOut`)."""
    return {code: {"model": ErrorOut, "description": _DESCRIPTIONS[code]} for code in (*codes, 503)}
