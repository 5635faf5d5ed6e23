"""Landing on the dashboard (docs/workspaces.md "Landing the work"), in a real browser: the LANDING
lane with a waiting card's one-line reason, the verify passed/failed badge on cards, and the
drawer's Verify and Landed columns and its verify-output box. The state is seeded through the
store's own transitions (claim, finish with the verify gate's verdict, the lander's writes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from squad.core.settings import Settings
from squad.core.statuses import Status
from squad.store.card_store import open_store
from support.browser import open_page, wait_js
from support.cli import squad_env
from support.store import add, seed_verified

LANDED = "89abcdef0123456789abcdef0123456789abcdef"
WHY = "base 'main' is checked out in /home/me/app, a working tree squad did not create; set workspace.remote"
FAIL_OUT = "FAILED test_total <b>not bold</b>\n1 failed"


def _run_cell(page: Any, column: str) -> str:
    """The text of the drawer's first run row in the column headed `column`."""
    return str(page.evaluate("""(column) => {
      const heads = [...document.querySelectorAll('#d-runs thead th')].map((th) => th.textContent);
      const row = document.querySelector('#d-runs tbody tr');
      return row.children[heads.indexOf(column)].textContent;
    }""", column))


def _open(page: Any, card_id: str, shown: str) -> None:
    """Open a card's drawer and wait until its runs are drawn: the box or cell `shown` (a selector)
    that only this card's runs draw (the table keeps the last card's rows until then)."""
    page.click(f'[data-card-id="{card_id}"] .c-title')
    wait_js(page, f"""document.querySelector('#d-id').textContent === '{card_id}'
                      && document.querySelector('#detail').hidden === false && {shown}""")


def _close(page: Any) -> None:
    page.keyboard.press("Escape")
    page.wait_for_selector("#detail", state="hidden")


def test_landing_lane_verify_badges_and_the_drawers_verify_and_landed_columns(
        browser: Any, serve_factory: Any, settings: Settings, tmp_path: Path) -> None:
    # Given a card waiting to land with the reason it cannot, one whose verify failed, one that landed
    # and one never run
    store = open_store(settings.database_url)
    try:
        assert seed_verified(store, "B-LAND", verify_exit=0, verify_output="12 passed", land=True) == Status.LANDING
        assert store.note_landing("B-LAND", WHY)
        assert seed_verified(store, "B-FAIL", verify_exit=1, verify_output=FAIL_OUT) == Status.FAILED
        assert seed_verified(store, "B-DONE", verify_exit=0, verify_output="3 passed", land=True,
                             landed_commit=LANDED) == Status.DONE
        add(store, "B-TODO")
    finally:
        store.dispose()
    env = squad_env(SQUAD_REDIS_URL=settings.redis_url, SQUAD_DATABASE_URL=settings.database_url,
                    USE_CELERY="false")
    server = serve_factory(env)
    page, errors = open_page(browser, server.url)

    # Expect the LANDING lane holding the LANDING card, with its one-line reason as text
    page.wait_for_selector('.lane[data-lane="LANDING"] [data-card-id="B-LAND"][data-status="LANDING"]',
                           state="attached")
    assert page.text_content('[data-card-id="B-LAND"] .c-err') == WHY
    # ... the verify verdict on each card that ran it, and none on a card that never ran
    badges = {card_id: page.evaluate(f"""(() => {{
        const b = document.querySelector('[data-card-id="{card_id}"] [data-verify]');
        return b ? [b.dataset.verify, b.textContent] : null; }})()""")
        for card_id in ("B-LAND", "B-FAIL", "B-DONE", "B-TODO")}
    assert badges == {"B-LAND": ["passed", "verify passed"], "B-FAIL": ["failed", "verify failed"],
                      "B-DONE": ["passed", "verify passed"], "B-TODO": None}

    # When the failed card is opened: its run's Verify column says failed with the exit code, nothing
    # landed, and the verify output is shown as text
    _open(page, "B-FAIL", "document.querySelector('#d-verify-out').textContent.includes('1 failed')")
    assert (_run_cell(page, "Verify"), _run_cell(page, "Landed")) == ("failed (1)", "–")
    page.wait_for_selector("#d-verify", state="visible")
    assert page.text_content("#d-verify-out") == f"attempt 1: verify failed (exit 1)\n{FAIL_OUT}"
    _close(page)
    # ... the landed card: verify passed and the commit its landing put on base
    _open(page, "B-DONE", "document.querySelector('#d-verify-out').textContent.includes('3 passed')")
    assert (_run_cell(page, "Verify"), _run_cell(page, "Landed")) == ("passed", LANDED[:12])
    assert page.text_content("#d-verify-out") == "attempt 1: verify passed\n3 passed"
    _close(page)
    # ... a card without runs has no verify-output box
    _open(page, "B-TODO", "document.querySelector('#d-runs tbody td.muted')")
    assert page.is_hidden("#d-verify")
    assert errors.items == []

