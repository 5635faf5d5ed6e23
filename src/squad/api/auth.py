"""Who a request is and what it may do (docs/team.md "Tokens and roles", docs/security.md).

`squad.api.guard` resolves every `/api/` request's principal (401 for an unknown or revoked token)
and `/ws/tasks` does it here; `require_role`, a dependency of every route, then compares the
principal's role with the route's entry in `ROUTES` — one table, so a new route is one line. A
write route missing from the table needs `admin` (closed by default; a test lists the table's gaps).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from anyio import to_thread
from fastapi import HTTPException, Request, WebSocket
from fastapi.security import HTTPBearer
from starlette.types import Scope

from squad.store.card_store import CardStore
from squad.store.team_store import TeamStore
from squad.team.tokens import ANONYMOUS, TOKEN_PREFIX, Principal, Role, principal_for

TOKEN_SUBPROTOCOL_PREFIX = "squad.token."  # `new WebSocket(url, ["squad", "squad.token.<token>"])`
# A token with characters a subprotocol name cannot hold travels as base64url of its UTF-8 bytes.
TOKEN64_SUBPROTOCOL_PREFIX = "squad.token64."
bearer = HTTPBearer(auto_error=False, description="An API token (only when the server has tokens)")
#: how long "this store has no live token, the API is open" is believed without asking the store again
OPEN_CHECK_EVERY_S = 2.0
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Access:
    """A route's entry: the role it needs (None: no token, the route checks its own credential) and
    the audit log's name for what it does."""

    role: Role | None
    action: str


#: (method, route path) → who may call it and how the audit log names it. Reads not listed need
#: `viewer`; writes not listed need `admin` (and `test_every_write_route_has_a_role` fails).
ROUTES: dict[tuple[str, str], Access] = {
    ("POST", "/api/cards"): Access(Role.OPERATOR, "add"),
    ("POST", "/api/tasks/{card_id}/retry"): Access(Role.OPERATOR, "retry"),
    ("POST", "/api/tasks/retry"): Access(Role.OPERATOR, "retry"),
    ("POST", "/api/tasks/{card_id}/cancel"): Access(Role.OPERATOR, "cancel"),
    ("POST", "/api/cards/{card_id}/approve"): Access(Role.OPERATOR, "approve"),
    ("POST", "/api/cards/{card_id}/reject"): Access(Role.OPERATOR, "reject"),
    ("POST", "/api/cards/{card_id}/land"): Access(Role.OPERATOR, "land"),
    ("POST", "/api/cards/{card_id}/answer"): Access(Role.OPERATOR, "answer"),
    ("GET", "/api/audit"): Access(Role.ADMIN, "audit"),
    ("POST", "/api/intake/github"): Access(None, "intake"),
}
#: paths whose route checks its own credential (a webhook signature), so the guard asks for no token
PUBLIC_PATHS = frozenset(path for (_m, path), access in ROUTES.items() if access.role is None)


def access_for(method: str, path: str) -> Access:
    """The entry of `ROUTES`, or the default: reads need `viewer`, unknown writes `admin`."""
    found = ROUTES.get((method, path))
    if found is not None:
        return found
    if method in READ_METHODS:
        return Access(Role.VIEWER, "read")
    return Access(Role.ADMIN, f"{method.lower()} {path}")


def presented_token(scope: Scope, headers: dict[str, str]) -> str | None:
    """The token of a request: `Authorization: Bearer`, a `squad.token.` WebSocket subprotocol, or `?token=`."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    for proto in headers.get("sec-websocket-protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            return proto[len(TOKEN_SUBPROTOCOL_PREFIX):]
        if proto.startswith(TOKEN64_SUBPROTOCOL_PREFIX):
            return _unbase64(proto[len(TOKEN64_SUBPROTOCOL_PREFIX):])
    query = scope.get("query_string", b"").decode("latin-1")
    for key, item in parse_qsl(query, keep_blank_values=True):
        if key == "token":
            return item
    return None


def _unbase64(text: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8", "replace")
    except ValueError:
        return None


class Authenticator:
    """Resolves a presented token to a principal: `SQUAD_API_TOKEN` (admin), a stored token, or —
    on a server with neither (no `SQUAD_API_TOKEN`, no token ever created) — `anonymous` with every
    right (the loopback default)."""

    def __init__(self, env_token: str | None, store: CardStore) -> None:
        self.env_token = env_token or None
        self.team = TeamStore(store)
        self._open_until = 0.0

    def _open(self) -> bool:
        if self.env_token is not None:
            return False
        if time.monotonic() < self._open_until:
            return True
        if self.team.has_tokens():
            return False
        self._open_until = time.monotonic() + OPEN_CHECK_EVERY_S
        return True

    def resolve(self, given: str | None) -> Principal | None:
        """The principal of `given` (blocking: the store may be asked)."""
        found = principal_for(self.team, self.env_token, given)
        if found is not None or (given or "").startswith(TOKEN_PREFIX):
            return found  # a named token that is unknown or revoked is refused, even on an open server
        return Principal(ANONYMOUS, Role.ADMIN) if self._open() else None

    async def resolve_async(self, given: str | None) -> Principal | None:
        """`resolve` off the event loop, unless `SQUAD_API_TOKEN` answers it."""
        if self.env_token is not None and given is not None and not given.startswith(TOKEN_PREFIX):
            return principal_for(self.team, self.env_token, given)
        return await to_thread.run_sync(self.resolve, given)


def principal_of(scope: Scope) -> Principal | None:
    """The principal the guard put on this request."""
    state: Any = scope.get("state") or {}
    found = state.get("principal") if isinstance(state, dict) else None
    return found if isinstance(found, Principal) else None


async def require_role(request: Request) -> None:
    """Dependency of every route: 403 naming the role needed when the principal's is lower."""
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    access = access_for(request.method, path)
    principal = principal_of(request.scope)
    if access.role is None or principal is None:
        return
    if principal.role < access.role:
        raise HTTPException(status_code=403, detail=f"this needs the {access.role.label} role "
                                                    f"({principal.name} is {principal.role.label})")


require_token = require_role  # the name the routes' `Authorized` dependency was built from


async def websocket_principal(ws: WebSocket) -> Principal | None:
    """The socket's principal (any role reads): an `Authorization` header, a `squad.token.<token>`
    subprotocol, or `?token=` (browsers cannot set headers on a socket)."""
    headers = {k.lower(): v for k, v in ws.headers.items()}
    auth: Authenticator = ws.app.state.squad_auth
    return await auth.resolve_async(presented_token(ws.scope, headers))


def websocket_subprotocol(ws: WebSocket) -> str | None:
    """The subprotocol to accept: `squad` when offered (a browser sending its token as a subprotocol
    must get one of its offers back, and never the token itself)."""
    offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    return "squad" if "squad" in offered else None
