"""The API's front door: Host allow-list, Origin check, token on reads, bounded request bodies.

One pure ASGI middleware, so every route (present and future) is covered without remembering a
dependency:

- a `Host` that is not a loopback name or in `SQUAD_ALLOWED_HOSTS` → 400 (DNS rebinding: a
  hostile page whose name now points at 127.0.0.1 still sends its own name);
- a WebSocket or state-changing request whose `Origin` is neither this server nor a configured
  CORS origin → 403 (a page on another site, in a browser on this machine);
- with `SQUAD_API_TOKEN` or any live named token (`squad token create`), every `/api/` route needs
  one (401 when unknown or revoked; the socket checks it itself, see `ws.py`), and the request
  carries its principal for `auth.require_role`; `/health` and `/metrics` too with
  `SQUAD_PROTECT_METRICS=true`; the dashboard page and its assets load without it, so the page can
  ask for one; `POST /api/intake/github` checks its own signature instead;
- a body over `max_body_bytes` (1 MiB) → 413, read at most once that far.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from squad.api.auth import PUBLIC_PATHS, Authenticator, presented_token
from squad.core.masking import mask_text
from squad.core.settings import Settings

__all__ = ["LOOPBACK_HOSTS", "Guard", "SecretFilter", "allowed_hosts", "host_allowed"]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def allowed_hosts(settings: Settings) -> list[str]:
    """Host names the API answers to: the loopback names plus `SQUAD_ALLOWED_HOSTS`."""
    return [*LOOPBACK_HOSTS, *(h.lower() for h in settings.allowed_hosts)]


def _hostname(host_header: str) -> str:
    """`example.com:3000` → `example.com`; `[::1]:3000` → `::1`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def host_allowed(host_header: str, patterns: Iterable[str]) -> bool:
    """True when the Host names an allowed host (`*` allows all, `*.example.com` its subdomains)."""
    name = _hostname(host_header)
    for pattern in patterns:
        if pattern == "*" or name == pattern.strip("[]"):
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _reply(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail, "problems": []}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _deny_websocket(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
    """Refuse a socket before accepting it: an HTTP answer where the server supports it, else a close."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        body = json.dumps({"detail": detail, "problems": []}).encode()
        await send({"type": "websocket.http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": detail})


class Guard:
    """Pure ASGI middleware applying the checks of the module docstring, in that order."""

    def __init__(self, app: ASGIApp, settings: Settings, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth
        self.hosts = allowed_hosts(settings)
        self.cors_origins = {o.rstrip("/").lower() for o in settings.cors_origins}
        self.protect_metrics = settings.protect_metrics
        self.max_body = settings.max_body_bytes

    def _needs_token(self, path: str) -> bool:
        if path in PUBLIC_PATHS:
            return False
        if path.startswith("/api/") or path == "/api":
            return True
        return self.protect_metrics and path in ("/health", "/metrics")

    def _origin_allowed(self, origin: str, host_header: str) -> bool:
        origin = origin.strip().lower().rstrip("/")
        if origin in self.cors_origins:
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        return parts.scheme in ("http", "https") and parts.netloc == host_header.strip().lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        host = headers.get("host", "")
        is_ws = scope["type"] == "websocket"
        if not host_allowed(host, self.hosts):
            await self._refuse(scope, receive, send, 400, "host not allowed (see SQUAD_ALLOWED_HOSTS)")
            return
        origin = headers.get("origin")
        if origin is not None and (is_ws or scope.get("method") in STATE_CHANGING) \
                and not self._origin_allowed(origin, host):
            await self._refuse(scope, receive, send, 403, "origin not allowed")
            return
        if is_ws:  # the socket endpoint checks the token itself (it answers with its own close codes)
            await self.app(scope, receive, send)
            return
        if scope.get("method") != "OPTIONS" and self._needs_token(scope["path"]):
            principal = await self.auth.resolve_async(presented_token(scope, headers))
            if principal is None:
                await _reply(send, 401, "missing, unknown or revoked API token", {"WWW-Authenticate": "Bearer"})
                return
            scope.setdefault("state", {})["principal"] = principal
        if scope.get("method") in STATE_CHANGING:
            await self._bounded(scope, receive, send, headers)
            return
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
        if scope["type"] == "websocket":
            await _deny_websocket(scope, receive, send, status, detail)
        else:
            await _reply(send, status, detail)

    async def _bounded(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        """Buffer the body up to the limit (413 past it), then hand it to the app in one message."""
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await _reply(send, 413, f"request body larger than {self.max_body} bytes")
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await _reply(send, 413, f"request body larger than {self.max_body} bytes")
                return
            if not message.get("more_body", False):
                break
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class SecretFilter(logging.Filter):
    """Masks `token=` query values and URL passwords in uvicorn's access and error log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(mask_text(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = mask_text(record.msg)
        return True
