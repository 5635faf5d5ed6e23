"""Bearer-token check for mutating endpoints and the socket (`SQUAD_API_TOKEN`, docs/operations.md).

GETs stay open; with a token configured every POST and `/ws/tasks` need it. Tokens are compared
in constant time (over their SHA-256 digests, so not even the length leaks).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, WebSocket
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

bearer = HTTPBearer(auto_error=False, description="`SQUAD_API_TOKEN` (only when the server has one)")


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    if given is None:
        return False
    return hmac.compare_digest(hashlib.sha256(given.encode("utf-8", "replace")).digest(),
                               hashlib.sha256(expected.encode("utf-8")).digest())


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
    if not token_matches(expected, given):
        raise HTTPException(status_code=401, detail="missing or wrong API token",
                            headers={"WWW-Authenticate": "Bearer"})


def websocket_authorized(ws: WebSocket) -> bool:
    """The socket's token: `?token=` (browsers cannot set headers) or an `Authorization` header."""
    expected = _expected(ws)
    if expected is None:
        return True
    given = ws.query_params.get("token")
    if given is None:
        scheme, _, value = ws.headers.get("authorization", "").partition(" ")
        given = value if scheme.lower() == "bearer" else None
    return token_matches(expected, given)
