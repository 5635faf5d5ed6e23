"""The dashboard's world for browser tests: a real `squad serve` subprocess, Debian's Chromium, a page's errors.

Never a downloaded browser: Chromium comes from the distribution (`scripts/test` installs the
`chromium` package when /usr/bin/chromium is missing). The fixtures are in tests/browser/conftest.py.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from support.processes import free_port, kill_tree, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: Console messages a page may log while the server it talks to is deliberately down or refusing it.
EXPECTED_WHILE_DOWN = ("WebSocket connection to", "net::ERR_CONNECTION_REFUSED", "status of 401")


@dataclass
class Serve:
    """`squad serve` as a subprocess on a fixed port, so a test can stop and restart it."""

    env: dict[str, str]
    cwd: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.cwd / f"serve-{self.port}.log", "ab")  # noqa: SIM115 - kept for the process lifetime
        self.proc = subprocess.Popen([sys.executable, "-m", "squad", "serve", "--port", str(self.port)],
                                     cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            try:
                return httpx.get(self.url + "/health", timeout=2).status_code in (200, 503)
            except httpx.HTTPError:
                return False

        wait_for(up, 60, interval=0.2, message="squad serve answering")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            kill_tree(self.proc)
        self.proc = None

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.cwd.glob(f"serve-{self.port}.log"))


@dataclass
class PageErrors:
    """Every uncaught page error and console error of a page."""

    items: list[str] = field(default_factory=list)

    def unexpected(self, allowed: tuple[str, ...] = ()) -> list[str]:
        return [e for e in self.items if not any(a in e for a in allowed)]


def _is_asset(url: str) -> bool:
    """The page itself or one of its files under /static (a module, the style sheet)."""
    path = urlsplit(url).path
    return path == "/" or path.startswith("/static/")


def open_page(browser: Any, url: str, *, before: Callable[[Any], None] | None = None,
              **context_args: Any) -> tuple[Any, PageErrors]:
    """A fresh context and page with its errors collected: uncaught errors, console errors, and
    any request for the page or its files that fails or is answered with an error status (a
    module that cannot be loaded stops the whole page). `before(page)` runs before the page is
    loaded (to add listeners or init scripts)."""
    context = browser.new_context(**{"viewport": {"width": 1500, "height": 900}, **context_args})
    page = context.new_page()
    if before:
        before(page)
    page.set_default_timeout(120_000)
    errors = PageErrors()
    page.on("pageerror", lambda exc: errors.items.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.items.append(f"console: {msg.text}") if msg.type == "error" else None)
    page.on("requestfailed", lambda req: errors.items.append(f"requestfailed: {req.url} {req.failure}")
            if _is_asset(req.url) else None)
    page.on("response", lambda res: errors.items.append(f"response {res.status}: {res.url}")
            if res.status >= 400 and _is_asset(res.url) else None)
    page.goto(url)
    return page, errors


def wait_js(page: Any, expression: str, timeout_s: float = 120) -> object:
    """Wait until a JavaScript expression is truthy in the page (its value).

    Playwright's `wait_for_function` compiles its predicate with `eval` inside the page, which the
    dashboard's Content-Security-Policy refuses; `page.evaluate` goes through the DevTools protocol,
    which the policy does not govern.
    """
    return wait_for(lambda: page.evaluate(expression), timeout_s, interval=0.1, message=expression)
