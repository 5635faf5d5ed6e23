"""The HTTP API as the tests reach it: is it answering yet."""

from __future__ import annotations

import httpx


def api_answers(base: str, statuses: tuple[int, ...] = (200,)) -> bool:
    """True when the API at `base` answers `/health` with one of `statuses`."""
    try:
        return httpx.get(f"{base}/health", timeout=5).status_code in statuses
    except httpx.HTTPError:
        return False
