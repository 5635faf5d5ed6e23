"""Browser fixtures: `squad serve` subprocesses stopped after the test, and Chromium driven by Playwright."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.browser import CHROMIUM, CHROMIUM_ARGS, Serve


@pytest.fixture
def serve_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Serve] = []

    def make(env: dict[str, str]) -> Serve:
        server = Serve(env=env, cwd=tmp_path)
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


# Module scope: the sync API keeps an event loop running in the main thread while it lives, and
# later tests that call asyncio.run() there must not find it.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "install Debian's chromium package (scripts/test does)"
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
