"""Every write through the API, in the audit log (docs/team.md "Audit log").

A pure ASGI middleware inside the guard (which has put the principal on the request): after a
state-changing `/api/` request has been answered, one row names who (the token's name), what (the
route's action in `auth.ROUTES`), which card (the path's `card_id`, else the body's), from where
(the client address) and the result (the HTTP status). Being a middleware, it covers every route,
those added later too, without a line in the route.
"""

from __future__ import annotations

import json

from anyio import to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from squad.api.auth import access_for, principal_of
from squad.core.cards import CARD_ID_RE
from squad.store.card_store import CardStore
from squad.store.team_store import TeamStore
from squad.team.audit import record

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BODY_PEEK_BYTES = 64 * 1024  # a card id is read from a body only this long


def _card_from_body(body: bytes) -> str | None:
    if not body or len(body) > BODY_PEEK_BYTES:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    value = data.get("card_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and CARD_ID_RE.fullmatch(value) else None


class AuditTrail:
    """Records each answered write request (see the module docstring)."""

    def __init__(self, app: ASGIApp, store: CardStore) -> None:
        self.app = app
        self.team = TeamStore(store)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in WRITES or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        status = 0
        body = bytearray()

        async def tap_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) <= BODY_PEEK_BYTES:
                body.extend(message.get("body", b""))
            return message

        recorded = False

        async def tap_send(message: Message) -> None:
            nonlocal status, recorded
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body") and not recorded:
                # before the answer's last byte: a client that has its answer finds the row
                recorded = True
                await self._record(scope, status, bytes(body))
            await send(message)

        try:
            await self.app(scope, tap_receive, tap_send)
        finally:
            if not recorded:
                await self._record(scope, status or 500, bytes(body))

    async def _record(self, scope: Scope, status: int, body: bytes) -> None:
        principal = principal_of(scope)
        route = scope.get("route")
        access = access_for(str(scope["method"]), str(getattr(route, "path", scope["path"])))
        if principal is None and access.role is not None:
            return  # refused before anyone was known (401): nobody to name
        params = scope.get("path_params") or {}
        card = params.get("card_id") if isinstance(params.get("card_id"), str) else _card_from_body(body)
        # a route that checks its own credential names who and what itself (the GitHub intake)
        said = scope.get("state") or {}
        who = principal.name if principal is not None else str(said.get("audit_who") or access.action)
        action = f"{access.action} {said['audit_action']}" if said.get("audit_action") else access.action
        card = said.get("audit_card") or card
        client = scope.get("client")
        await to_thread.run_sync(lambda: record(
            self.team, who=who, action=action, card_id=card,
            client=client[0] if client else None, result=str(status)))
