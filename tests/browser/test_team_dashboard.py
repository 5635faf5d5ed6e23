"""The dashboard with named tokens (docs/team.md): who is signed in, no card buttons for a viewer,
"cancelled by NAME" in a card's drawer — in Debian's Chromium against a real `squad serve`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from squad.core.settings import Settings
from support.browser import EXPECTED_WHILE_DOWN, open_page
from support.cli import run_cli, squad_env


def _token(env: dict[str, str], name: str, role: str) -> str:
    made = run_cli("token", "create", name, "--role", role, env=env)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def test_a_viewer_sees_who_is_signed_in_no_card_buttons_and_who_cancelled_a_card(
        browser: Any, serve_factory: Any, settings: Settings, tmp_path: Path) -> None:
    # Given a store with a viewer and an operator, two cards, and one of them cancelled by the operator
    (tmp_path / "squad.toml").write_text("", encoding="utf-8")
    env = squad_env(SQUAD_REDIS_URL=settings.redis_url, SQUAD_DATABASE_URL=settings.database_url,
                    SQUAD_CONFIG=str(tmp_path / "squad.toml"))
    viewer, operator = _token(env, "vic", "viewer"), _token(env, "opal", "operator")
    for card_id in ("V-1", "V-2"):
        assert run_cli("card", "add", "--id", card_id, "--title", f"card {card_id}", env=env).returncode == 0
    server = serve_factory(env)
    cancelled = httpx.post(f"{server.url}/api/tasks/V-2/cancel", headers={"Authorization": f"Bearer {operator}"},
                           timeout=30)
    assert cancelled.status_code == 200, cancelled.text

    # When the viewer signs in on the page
    page, errors = open_page(browser, server.url)
    page.wait_for_selector("#token-dialog[open]")
    page.fill("#token-input", viewer)
    page.click("#token-submit")
    page.wait_for_selector('#conn[data-state="live"]')
    page.wait_for_selector('[data-card-id="V-1"]', state="attached")

    # Expect the header to name the token and its role, and no card button to be shown
    page.wait_for_selector("#who:has-text('vic')")  # selectors, not script: the page's CSP forbids eval
    assert page.text_content("#who") == "vic · viewer"
    assert page.get_attribute("body", "data-role") == "viewer"
    buttons = page.query_selector_all("button[data-action]")
    assert buttons and not any(b.is_visible() for b in buttons)

    # ... and the drawer of the cancelled card to say who cancelled it
    page.goto(f"{server.url}/#/cards/V-2")
    page.wait_for_selector("#d-audit:has-text('cancelled by opal')")
    assert not any(b.is_visible() for b in page.query_selector_all("#d-actions button"))
    assert errors.unexpected(EXPECTED_WHILE_DOWN) == []
