"""Bearer-token check (`SQUAD_API_TOKEN`, docs/security.md).

With a token configured every `/api/` route (reads too) and `/ws/tasks` need it; `squad.api.guard`
enforces it for every HTTP route, the socket checks it here. Tokens are compared in constant time
(over their SHA-256 digests, so not even the length leaks).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import Depends, HTTPException, Request, WebSocket
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import Scope

TOKEN_SUBPROTOCOL_PREFIX = "squad.token."  # `new WebSocket(url, ["squad", "squad.token.<token>"])`
# A token with characters a subprotocol name cannot hold travels as base64url of its UTF-8 bytes.
TOKEN64_SUBPROTOCOL_PREFIX = "squad.token64."
bearer = HTTPBearer(auto_error=False, description="`SQUAD_API_TOKEN` (only when the server has one)")


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    if given is None:
        return False
    return hmac.compare_digest(hashlib.sha256(given.encode("utf-8", "replace")).digest(),
                               hashlib.sha256(expected.encode("utf-8")).digest())


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


def _expected(request: Request | WebSocket) -> str | None:
    token: str | None = request.app.state.squad.settings.api_token
    return token or None


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Dependency of every mutating route: 401 unless the server has no token or it matches."""
    expected = _expected(request)
    if expected is None:
        return
    given = credentials.credentials if credentials is not None else None
    if given is None:
        given = presented_token(request.scope, {k.lower(): v for k, v in request.headers.items()})
    if not token_matches(expected, given):
        raise HTTPException(status_code=401, detail="missing or wrong API token",
                            headers={"WWW-Authenticate": "Bearer"})


def websocket_authorized(ws: WebSocket) -> bool:
    """The socket's token: an `Authorization` header, a `squad.token.<token>` subprotocol, or
    `?token=` (browsers cannot set headers on a socket)."""
    expected = _expected(ws)
    if expected is None:
        return True
    headers = {k.lower(): v for k, v in ws.headers.items()}
    return token_matches(expected, presented_token(ws.scope, headers))


def websocket_subprotocol(ws: WebSocket) -> str | None:
    """The subprotocol to accept: `squad` when offered (a browser sending its token as a subprotocol
    must get one of its offers back, and never the token itself)."""
    offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    return "squad" if "squad" in offered else None
