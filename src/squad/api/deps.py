"""`Annotated` dependency aliases shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from squad.api.auth import require_token
from squad.api.state import AppState
from squad.core.cards import CARD_ID_RE
from squad.core.errors import NotFoundError
from squad.core.safetext import excerpt
from squad.core.settings import Settings
from squad.store.card_store import CardStore

#: Run ids are 32-bit integers in the store; a larger one can never exist (and must not reach SQL).
MAX_RUN_ID = 2**31 - 1


def get_state(request: Request) -> AppState:
    """The process's shared state."""
    state: AppState = request.app.state.squad
    return state


def get_store(request: Request) -> CardStore:
    """The card store."""
    return get_state(request).store


def get_settings(request: Request) -> Settings:
    """The server's settings."""
    return get_state(request).settings


def card_id_path(card_id: Annotated[str, Path(description="A card id")]) -> str:
    """A card id from the path; one that cannot be a card id is simply unknown (404)."""
    if not CARD_ID_RE.fullmatch(card_id):
        raise NotFoundError(f"unknown card {excerpt(card_id)!r}")
    return card_id


StateDep = Annotated[AppState, Depends(get_state)]
StoreDep = Annotated[CardStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
CardIdDep = Annotated[str, Depends(card_id_path)]
RunIdDep = Annotated[int, Path(ge=1, le=MAX_RUN_ID, description="A run id")]
Authorized = Depends(require_token)
