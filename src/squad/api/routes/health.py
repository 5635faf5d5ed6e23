"""`GET /health`: every probe bounded by a short timeout, so a dead dependency answers fast."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response

from squad.api.auth import principal_of
from squad.api.deps import Authorized, StateDep
from squad.api.schemas import AuthOut, HealthOut, error_responses
from squad.api.state import AppState, bounded
from squad.core.constants import VERSION
from squad.live.presence import live_orchestrators_async, mode_in_use
from squad.orchestration.dispatch import execution_mode

router = APIRouter(tags=["health"])


async def _redis(state: AppState) -> str:
    if await bounded(state.events.ping()):
        return "connected"
    return "error" if state.settings.use_celery else "not_available"


async def _execution_mode(state: AppState) -> str:
    """The mode the running orchestrators decided; with none alive, the one a producer would use."""
    alive, pong = await asyncio.gather(bounded(live_orchestrators_async(state.events, state.keys)),
                                       bounded(state.broker.ping()) if state.settings.use_celery else _none())
    return mode_in_use(alive or []) or execution_mode(state.settings, broker_ok=bool(pong)).name


async def _none() -> None:
    return None


@router.get("/health", response_model=HealthOut, responses=error_responses())
async def health(state: StateDep, response: Response) -> HealthOut:
    """Database, Redis and Celery state, version, open sockets and execution mode."""
    db_ok, redis, snap, mode = await asyncio.gather(
        state.probe.run("db", state.store.ping), _redis(state), state.monitor.snapshot(),
        _execution_mode(state))
    database = "connected" if db_ok else "error"
    if database == "error":
        status = "unhealthy"
        response.status_code = 503
    elif redis == "error" or snap.status in ("error", "no_workers"):
        status = "degraded"
    else:
        status = "healthy"
    return HealthOut.model_validate({
        "status": status, "timestamp": datetime.now(tz=UTC), "version": VERSION, "database": database,
        "redis": redis, "celery": snap.status, "celery_workers": snap.online,
        "active_websockets": state.hub.count, "execution_mode": mode,
    })


@router.get("/api/auth", response_model=AuthOut, dependencies=[Authorized], responses=error_responses(401))
def auth_check(request: Request) -> AuthOut:
    """Whether the presented token is accepted (401 when the server has tokens and this is none of
    them), its name and role; the dashboard asks before opening the socket and shows who is signed in."""
    principal = principal_of(request.scope)
    if principal is None:
        return AuthOut(authorized=True, token_required=False, name="anonymous", role="admin")
    return AuthOut.model_validate({"authorized": True, "token_required": principal.name != "anonymous",
                                   "name": principal.name, "role": principal.role.label})
