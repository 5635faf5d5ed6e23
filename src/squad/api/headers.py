"""Security headers on every HTTP answer: what the browser may load, frame, send and sniff.

The dashboard shows text that agents wrote. It renders that text as text (`textContent` or
escaping, `web/util.js`), and the Content-Security-Policy is the second layer: were markup ever
injected, the browser would still refuse inline scripts and event handlers, scripts from
anywhere but this server, and connections (the token!) to any other host. The policy also
forbids style attributes in markup: the page sets styles through the CSS object model.

`/docs` (Swagger UI) and `/redoc` are FastAPI's pages: they load their script from a CDN and
start it inline, so they get a policy of their own that allows exactly that and still no other
connection. Refusals by `guard.Guard` carry the headers too (this middleware wraps it).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_SECURITY_POLICY", "DOCS_CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "SecurityHeaders"]

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_CDN = "https://cdn.jsdelivr.net"  # where FastAPI's documentation pages take Swagger UI and ReDoc from
DOCS_CONTENT_SECURITY_POLICY = (
    f"default-src 'self'; script-src 'self' 'unsafe-inline' {_CDN}; style-src 'self' 'unsafe-inline' {_CDN} "
    f"https://fonts.googleapis.com; font-src 'self' https://fonts.gstatic.com; img-src 'self' data: "
    f"https://fastapi.tiangolo.com; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc")
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class SecurityHeaders:
    """Pure ASGI middleware adding the headers above to every HTTP response (not to sockets)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        common = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in SECURITY_HEADERS.items()]
        self.page_headers = [*common, (b"content-security-policy", CONTENT_SECURITY_POLICY.encode("latin-1"))]
        self.docs_headers = [*common, (b"content-security-policy", DOCS_CONTENT_SECURITY_POLICY.encode("latin-1"))]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.docs_headers if scope["path"] in _DOCS_PATHS else self.page_headers
        names = {name for name, _ in extra}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": [*kept, *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
