"""`squad serve`: the API (docs/api.md) on a socket bound before it starts, refused beyond this machine
without a token."""

from __future__ import annotations

import ipaddress
import logging
import sys

from fastapi import FastAPI

from squad.api.app import create_app
from squad.core.errors import ConfigError
from squad.core.settings import Settings
from squad.ops.ports import bind_tcp

__all__ = ["check_exposure", "is_loopback", "serve"]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, host: str, *, insecure: bool = False, named_tokens: bool = False) -> None:
    """Refuse to listen beyond this machine without a token (`SQUAD_API_TOKEN` or tokens made with
    `squad token create`), unless explicitly `--insecure`."""
    if not is_loopback(host) and not settings.api_token and not named_tokens and not insecure:
        raise ConfigError(
            f"refusing to serve on {host} without an API token: anyone who can reach it could retry or "
            "cancel cards. Set SQUAD_API_TOKEN or run `squad token create`, listen on 127.0.0.1, or pass "
            "--insecure to accept the risk"
        )


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 3000, insecure: bool = False) -> None:
    """Run the API with uvicorn until stopped (Ctrl-C / SIGTERM)."""
    import uvicorn

    from squad.api.guard import SecretFilter
    from squad.store.card_store import open_store
    from squad.store.team_store import TeamStore

    store = open_store(settings.database_url)
    check_exposure(settings, host, insecure=insecure, named_tokens=TeamStore(store).has_tokens())
    if host not in ("0.0.0.0", "::", "") and host.lower() not in settings.allowed_hosts:
        # Served on a named address: that name is a Host the clients will send.
        settings = settings.model_copy(update={"allowed_hosts": [*settings.allowed_hosts, host.lower()]})
    sock = bind_tcp(host, port)  # before the app starts: a taken port is one line and exit 2
    try:
        app: FastAPI = create_app(settings, store=store)
        # log_config=None: uvicorn's loggers go through our structured handler (squad.core.logconfig),
        # with the secrets of their lines masked.
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).addFilter(SecretFilter())
        config = uvicorn.Config(app, host=host, port=port, log_level="info", log_config=None,
                                timeout_graceful_shutdown=5, ws_ping_interval=20, ws_ping_timeout=20,
                                ws_per_message_deflate=False)
        shown = f"[{host}]" if ":" in host else host
        sys.stderr.write(f"squad serve: dashboard and API at http://{shown}:{port}/ (OpenAPI at /docs)\n")
        sys.stderr.flush()
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
