"""The FastAPI application: routes, error mapping, CORS, the socket hub's lifetime."""

from __future__ import annotations

import mimetypes
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from squad.api import ws
from squad.api.audit_trail import AuditTrail
from squad.api.auth import Authenticator, require_role
from squad.api.guard import Guard
from squad.api.headers import SecurityHeaders
from squad.api.metrics.prometheus import Exposition
from squad.api.monitor import WorkerMonitor
from squad.api.routes import board, cards, health, metrics, questions, review, runs, statuses, tasks, team, workers
from squad.api.state import AppState, Producers, bounded_step
from squad.api.validation import request_problems, strict_query
from squad.core.constants import VERSION
from squad.core.errors import BacklogError, SquadError
from squad.core.masking import mask_text
from squad.core.safetext import excerpt
from squad.core.settings import Settings
from squad.live.connections import async_redis
from squad.store.card_store import CardStore, open_store

log = structlog.get_logger(__name__)
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
PLACEHOLDER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Squad Orchestrator</title></head>
<body><h1>Squad Orchestrator</h1>
<p>The dashboard is not installed. The API is here: <a href="/docs">/docs</a>,
<a href="/api/cards/enhanced">/api/cards/enhanced</a>, <a href="/health">/health</a>.</p>
</body></html>
"""


_BODY_PARSE_ERROR = "There was an error parsing the body"  # FastAPI's 400 for an undecodable body


ERROR_LINE_MAX_CHARS = 300  # an error body quotes at most a short excerpt of the input


def _error(status: int, detail: str, problems: list[str] | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    lines = [excerpt(p, ERROR_LINE_MAX_CHARS) for p in problems or []][:100]
    return JSONResponse({"detail": excerpt(detail, ERROR_LINE_MAX_CHARS), "problems": lines}, status_code=status,
                        headers=headers)


def _install_error_handlers(app: FastAPI, state: AppState) -> None:
    """Errors are mapped once: SquadError by its `http_status`, bad input 422, outages 503."""

    @app.exception_handler(SquadError)
    async def squad_error(_request: Request, exc: SquadError) -> JSONResponse:
        problems = exc.problems if isinstance(exc, BacklogError) else []
        return _error(exc.http_status, str(exc), problems)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = request_problems(exc.errors(), exc.body)
        return _error(422, problems[0] if len(problems) == 1 else "invalid request", problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 400 and exc.detail == _BODY_PARSE_ERROR:
            return _error(422, "invalid body: not JSON text", ["body: not valid UTF-8 JSON"])
        if exc.status_code == 405:
            # FastAPI has one route per method: list every method of the path, not just one route's.
            headers["Allow"] = ", ".join(_allowed_methods(app, request))
        return _error(exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(SQLAlchemyError)
    async def database_error(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        log.error("database error", path=request.url.path, error=mask_text(str(exc).splitlines()[0]))
        return _error(503, "database unavailable")

    @app.exception_handler(RedisError)
    async def redis_error(request: Request, exc: RedisError) -> JSONResponse:
        log.error("redis error", path=request.url.path, error=mask_text(str(exc)))
        return _error(503, "redis unavailable")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        state.internal_errors += 1
        log.exception("internal error", path=request.url.path, error=repr(exc))
        return _error(500, "internal error")


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    path = request.url.path
    methods: set[str] = set()
    for regex, route_methods in app.state.route_methods:
        if regex.match(path):
            methods |= route_methods
    return sorted(methods)


def _route_methods(routers: list[APIRouter]) -> list[tuple[re.Pattern[str], set[str]]]:
    """(path regex, methods) of every API route, for the `Allow` header of a 405."""
    return [(route.path_regex, set(route.methods or ())) for router in routers for route in router.routes
            if isinstance(route, APIRoute)]


def _install_web(app: FastAPI) -> None:
    """`GET /` serves the dashboard page (`squad/web/index.html`), its assets under `/static`."""

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        page = WEB_DIR / "index.html"
        if page.is_file():
            return FileResponse(page, media_type="text/html")
        return HTMLResponse(PLACEHOLDER)

    # A module script (`<script type="module">`) is refused unless served with a JavaScript type.
    # The type comes from the host's tables: Python 3.11's own says application/javascript, a
    # Windows registry may say text/plain. Pin the standard one (RFC 9239) for every host.
    mimetypes.add_type("text/javascript", ".js")
    app.mount("/static", StaticFiles(directory=WEB_DIR, check_dir=False), name="static")


def create_app(settings: Settings, *, store: CardStore | None = None, ws_queue_size: int = ws.QUEUE_SIZE) -> FastAPI:
    """Build the API for these settings (opens and migrates the store; Redis is connected lazily)."""
    store = store or open_store(settings.database_url)
    events = async_redis(settings.events)
    broker = async_redis(settings.broker)
    hub_redis = async_redis(settings.events, socket_timeout=ws.BLOCK_MS / 1000 + 5)
    state = AppState(
        settings=settings, store=store, events=events, results=async_redis(settings.results), broker=broker,
        hub=ws.EventHub(hub_redis, store.redis_keys, queue_size=ws_queue_size),
        monitor=WorkerMonitor(settings, broker), producers=Producers(settings, store),
    )
    state.exposition = Exposition(state)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await state.hub.start()
        try:
            yield
        finally:
            await state.aclose()
            await bounded_step(hub_redis.aclose(), "event reader's redis client")

    app = FastAPI(title="Squad Orchestrator", version=VERSION, lifespan=lifespan,
                  description="Cards run by AI coding agents on Celery workers: monitor and steer them.")
    app.state.squad = state
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    # Inside the guard (the principal is known): every answered write goes to the audit log.
    app.add_middleware(AuditTrail, store=store)
    # Outermost: Host, Origin, token and body size are checked before anything else runs.
    app.state.squad_auth = Authenticator(settings.api_token, store)
    app.add_middleware(Guard, settings=settings, auth=app.state.squad_auth)
    # Around the guard, so its refusals carry them too: CSP, no framing, no referrer, no sniffing.
    app.add_middleware(SecurityHeaders)
    _install_error_handlers(app, state)
    routers = [module.router for module in (health, statuses, cards, board, runs, tasks, workers, metrics, review,
                                                questions, team)]
    for router in routers:
        app.include_router(router, dependencies=[Depends(strict_query), Depends(require_role)])
    app.state.route_methods = _route_methods(routers)
    # (method, path) of every API route: what `auth.ROUTES` must cover (tests/integration/test_team_roles.py)
    app.state.route_table = sorted((method, route.path) for router in routers for route in router.routes
                                   if isinstance(route, APIRoute) for method in route.methods or ())
    app.include_router(ws.router)
    _install_web(app)
    return app
