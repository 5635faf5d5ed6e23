"""The HTTP API as the tests reach it: a real uvicorn server in a thread, and its answers read back."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from squad.api.app import create_app
from squad.api.state import AppState
from squad.core.settings import Settings
from support.processes import free_port, kill_tree, wait_for


@dataclass
class ApiServer:
    """A listening server: its base URL, its app and the app's shared state."""

    url: str
    app: FastAPI
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.squad
        return state

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws/tasks"

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)


@contextmanager
def run_api(settings: Settings, **create_kwargs: Any) -> Iterator[ApiServer]:
    """Serve the app on a free loopback port until the block ends."""
    app = create_app(settings, **create_kwargs)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=3, ws_ping_interval=None, ws_per_message_deflate=False)
    server = uvicorn.Server(config)

    def serve() -> None:
        asyncio.run(server.serve())

    thread = threading.Thread(target=serve, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("API server did not start")
        time.sleep(0.02)
    try:
        yield ApiServer(url=f"http://127.0.0.1:{port}", app=app, server=server, thread=thread)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def api_answers(base: str, statuses: tuple[int, ...] = (200,)) -> bool:
    """True when the API at `base` answers `/health` with one of `statuses`."""
    try:
        return httpx.get(f"{base}/health", timeout=5).status_code in statuses
    except httpx.HTTPError:
        return False


def by_id(cards: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["card_id"]: c for c in cards}


@dataclass
class ServeLog:
    """What `squad serve` printed, known once it stopped."""
    text: str = ""


@contextmanager
def squad_serve(env: dict[str, str]) -> Iterator[tuple[str, ServeLog]]:
    """A real `squad serve` on a free port (its base URL), stopped with SIGTERM at the end, its
    output (stdout and stderr) in the `ServeLog` afterwards."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "squad", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = ServeLog()
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: api_answers(base), 60, message="squad serve answering")
        yield base, log
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            log.text, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                kill_tree(proc)
