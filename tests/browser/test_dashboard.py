"""The dashboard in a real browser (Debian's Chromium via Playwright) against a real `squad serve`,
a real worker running fake agents, and Redis: what a team lead sees and does, without reloading."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from squad.api.app import WEB_DIR
from squad.core.settings import Settings
from squad.store.card_store import open_store
from support.browser import EXPECTED_WHILE_DOWN, open_page, wait_js
from support.cli import run_cli, squad_env
from support.fake_agents import sandbox_toml
from support.paths import AGENTS
from support.processes import wait_for
from support.repos import make_repo

PY = sys.executable
TOKEN = "board-token-1234"


def _env(settings: Settings, tmp_path: Path, **extra: str) -> dict[str, str]:
    gate = [PY, str(AGENTS / "gate.py"), str(tmp_path / "gates" / "{card_id}"), "0.4"]
    agents = {
        "gate": gate,
        "fail": [PY, str(AGENTS / "fail.py")],
        "hang": [PY, str(AGENTS / "hang.py")],
    }
    (tmp_path / "gates").mkdir(exist_ok=True)
    (tmp_path / "squad.toml").write_text(sandbox_toml(tmp_path / "gates") + "".join(
        f'[agents.{name}]\ncommand = {json.dumps(argv)}\nparser = "markers"\n' for name, argv in agents.items()),
        encoding="utf-8")
    return squad_env(SQUAD_REDIS_URL=settings.redis_url, SQUAD_DATABASE_URL=settings.database_url,
                     SQUAD_LEASE_S="5", SQUAD_RETRY_BACKOFF="1", **extra)


def _import(env: dict[str, str], tmp_path: Path, cards: list[dict[str, Any]]) -> None:
    path = tmp_path / "backlog.json"
    path.write_text(json.dumps({"cards": cards}), encoding="utf-8")
    res = run_cli("backlog", "import", str(path), env=env)
    assert res.returncode == 0, res.stderr


def _in_lane(page: Any, card_id: str, lane: str, timeout_s: float = 120) -> None:
    try:
        page.wait_for_selector(f'.lane[data-lane="{lane}"] [data-card-id="{card_id}"][data-status="{lane}"]',
                               timeout=timeout_s * 1000, state="attached")
    except Exception as exc:
        held = _page_state(page, card_id)
        raise AssertionError(f"{card_id} not in {lane} ({str(exc).splitlines()[0]}); the page held {held}") from exc


def _page_state(page: Any, card_id: str) -> object:
    """What the page knew when a card did not show where expected (its copy, the feed, its toasts)."""
    return page.evaluate("""(id) => {
        const s = window.__squad.state, c = s.cards.get(id);
        return {card: c ? {status: c.status, lane: c._lane, evTs: c._evTs, updated: c._updated} : null,
                loaded: s.loaded, lastId: s.lastId, queued: s.queue.length, frame: s.frame, paused: s.paused,
                lanes: s.lanes.size, conn: document.querySelector("#conn").dataset.state,
                dialog: document.querySelector("#token-dialog").open,
                toasts: [...document.querySelectorAll("#toasts .toast")].map((t) => t.textContent)};
    }""", card_id)


def test_board_shows_a_live_backlog_and_steers_it_through_an_api_restart(
        browser: Any, serve_factory: Any, settings: Settings, tmp_path: Path,
        start_worker: Any) -> None:
    # Given a backlog, a real worker and `squad serve`, and the page open before anything runs
    env = _env(settings, tmp_path)
    _import(env, tmp_path, [
        {"card_id": "B-GATE", "title": "Runs until its gate opens", "agent": "gate", "squad": "web", "priority": 9},
        {"card_id": "B-NEXT", "title": "Waits for B-GATE", "agent": "gate", "depends_on": ["B-GATE"]},
        {"card_id": "B-FAIL", "title": "Always fails", "agent": "fail", "squad": "qa", "max_retries": 0},
        {"card_id": "B-HANG", "title": "Hangs until cancelled", "agent": "hang", "squad": "qa"},
        {"card_id": "B-SLOW", "title": "Finishes while the API is down", "agent": "gate", "priority": 8},
    ])
    start_worker(env, concurrency=4, wait_ready=False)  # it gets ready while the page loads
    server = serve_factory(env)
    page, errors = open_page(browser, server.url)
    page.wait_for_selector('#conn[data-state="live"]')
    for card_id in ("B-GATE", "B-NEXT", "B-FAIL", "B-HANG", "B-SLOW"):
        _in_lane(page, card_id, "TODO")
    page.evaluate("window.__sameDocument = true")

    # When the orchestrator releases the ready cards
    res = subprocess.run([PY, "-m", "squad", "orchestrate", "--once", "--mode", "celery"], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr

    # Expect every card in its lane, live
    _in_lane(page, "B-GATE", "IN_PROGRESS")
    _in_lane(page, "B-HANG", "IN_PROGRESS")
    _in_lane(page, "B-SLOW", "IN_PROGRESS")
    _in_lane(page, "B-FAIL", "FAILED")
    _in_lane(page, "B-NEXT", "TODO")
    # ... a running card's bar moves without a reload
    bar = '[data-card-id="B-GATE"] [role="progressbar"]'
    wait_js(page, f"Number(document.querySelector('{bar}').getAttribute('aria-valuenow')) >= 40")
    first = int(page.get_attribute(bar, "aria-valuenow") or 0)
    wait_js(page, f"Number(document.querySelector('{bar}').getAttribute('aria-valuenow')) > {first}")
    assert "working step" in (page.text_content('[data-card-id="B-GATE"] .c-step') or "")

    # ... it moves to DONE when its agent finishes
    (tmp_path / "gates" / "B-GATE").touch()
    _in_lane(page, "B-GATE", "DONE")
    assert page.get_attribute(f'{bar}', "aria-valuenow") == "100"

    # When retry is clicked on the FAILED card: a new attempt runs (and fails again)
    page.click('[data-card-id="B-FAIL"] [data-action="retry"]')
    wait_for(lambda: len(httpx.get(f"{server.url}/api/cards/B-FAIL/runs").json()) == 2, 60,
             message="second attempt of B-FAIL")
    _in_lane(page, "B-FAIL", "FAILED")
    wait_js(page, """document.querySelector('[data-card-id="B-FAIL"] .c-meta').textContent
                              .includes('attempt 2')""")

    # When cancel is clicked on a running card: it is CANCELLED and its run ends
    page.click('[data-card-id="B-HANG"] [data-action="cancel"]')
    _in_lane(page, "B-HANG", "CANCELLED")
    wait_for(lambda: [r["status"] for r in httpx.get(f"{server.url}/api/cards/B-HANG/runs").json()] == ["cancelled"],
             30, message="B-HANG's run ended as cancelled")
    assert errors.items == []

    # When the API process stops, a card finishes meanwhile, and the API comes back
    server.stop()
    page.wait_for_selector('#conn:not([data-state="live"])')
    (tmp_path / "gates" / "B-SLOW").touch()
    store = open_store(settings.database_url)
    wait_for(lambda: store.get_card("B-SLOW").status.value == "DONE", 60, message="B-SLOW done while the API is down")
    store.dispose()
    server.start()

    # Expect the page to reconnect by itself and show the lane change it missed, without a reload
    page.wait_for_selector('#conn[data-state="live"]', timeout=60_000)
    _in_lane(page, "B-SLOW", "DONE")
    assert page.evaluate("window.__sameDocument") is True
    assert errors.unexpected(EXPECTED_WHILE_DOWN) == []


def test_token_is_asked_once_a_wrong_one_is_explained_and_the_board_goes_live(
        browser: Any, serve_factory: Any, settings: Settings, tmp_path: Path) -> None:
    # Given a server with an API token and one card
    env = _env(settings, tmp_path, SQUAD_API_TOKEN=TOKEN)
    _import(env, tmp_path, [{"card_id": "T-1", "title": "token card", "agent": "gate"}])
    server = serve_factory(env)
    # The page's start asks for the statuses again once a token is entered: the answer to the wrong
    # token is held here until the right one is in (a refusal of a token replaced meanwhile asked
    # for a token again, and the board waited for it: live, no card, in a CI run).
    held: list[Any] = []

    def hold_statuses(route: Any) -> None:
        if route.request.headers.get("authorization") == "Bearer not-the-token":
            held.append(route)
        else:
            route.continue_()

    # When the page opens: it asks for the token
    sockets: list[Any] = []

    def before(p: Any) -> None:
        p.route("**/api/statuses", hold_statuses)
        p.on("websocket", lambda ws: sockets.append(ws))

    page, errors = open_page(browser, server.url, before=before)
    page.wait_for_selector("#token-dialog[open]")

    # ... a wrong one is refused with a clear message
    page.fill("#token-input", "not-the-token")
    page.click("#token-submit")
    page.wait_for_selector("#token-error:not([hidden])")
    assert "refused" in (page.text_content("#token-error") or "")

    # ... the right one closes the prompt and the board goes live
    page.fill("#token-input", TOKEN)
    page.click("#token-submit")
    wait_for(lambda: page.wait_for_timeout(50) or held, 60, message="the statuses asked with the wrong token")
    held[0].continue_()  # refused now, after the right token is in
    page.wait_for_selector('#conn[data-state="live"]')
    _in_lane(page, "T-1", "TODO", timeout_s=30)
    assert not page.is_visible("#token-dialog")
    # ... on one event feed (the page starts it once its lanes are built; a token entered before
    # that started a second one beside it)
    wait_for(lambda: page.wait_for_timeout(50) or len([s for s in sockets if not s.is_closed()]) == 1, 30,
             message="one open event feed")

    # Expect the token kept for the browser session: a reload does not ask again
    page.reload()
    page.wait_for_selector('#conn[data-state="live"]')
    _in_lane(page, "T-1", "TODO")
    assert not page.is_visible("#token-dialog")
    assert errors.unexpected(EXPECTED_WHILE_DOWN) == []


def test_review_lane_shows_the_diff_and_approve_and_reject_move_the_cards(
        browser: Any, serve_factory: Any, settings: Settings, tmp_path: Path) -> None:
    # Given two cards whose agent edited a git worktree and that now wait in REVIEW
    repo = tmp_path / "repo"
    make_repo(repo)
    (tmp_path / "marks").mkdir()
    agent = [PY, str(AGENTS / "git_worker.py"), str(tmp_path / "marks")]
    (tmp_path / "squad.toml").write_text(
        f'default_agent = "git"\n{sandbox_toml(tmp_path / "marks")}[agents.git]\ncommand = {json.dumps(agent)}\n'
        f'[workspace]\nrepo = "{repo}"\nreview = true\n', encoding="utf-8")
    env = squad_env(SQUAD_REDIS_URL=settings.redis_url, SQUAD_DATABASE_URL=settings.database_url, USE_CELERY="false",
                    SQUAD_ALLOWED_ROOTS=str(tmp_path))
    _import(env, tmp_path, [{"card_id": "R-OK", "title": "Approve me"}, {"card_id": "R-NO", "title": "Reject me"}])
    res = subprocess.run([PY, "-m", "squad", "orchestrate", "--mode", "local", "--once", "--wait", "--interval", "0.2"],
                         env=env, capture_output=True, text=True, timeout=180, check=False)
    assert res.returncode == 0, res.stderr
    server = serve_factory(env)
    page, errors = open_page(browser, server.url)
    _in_lane(page, "R-OK", "REVIEW")
    _in_lane(page, "R-NO", "REVIEW")

    # When a card in review is opened: its diff is shown; Escape closes the drawer
    page.click('[data-card-id="R-OK"] .c-title')
    page.wait_for_selector("#d-diff .add")
    assert "squad/R-OK" in (page.text_content("#d-diffstat") or "")
    assert "+attempt 1" in (page.text_content("#d-diff") or "")
    page.keyboard.press("Escape")
    page.wait_for_selector("#detail", state="hidden")

    # When one is approved and the other rejected with feedback
    page.click('[data-card-id="R-OK"] [data-action="approve"]')
    _in_lane(page, "R-OK", "DONE")
    page.click('[data-card-id="R-NO"] [data-action="reject"]')
    page.fill("#reject-feedback", "Handle the empty list too")
    page.click("#reject-submit")

    # Expect DONE and QUEUED (a new attempt will get the feedback), without a reload
    _in_lane(page, "R-NO", "QUEUED")
    assert errors.items == []


def test_a_board_of_more_than_a_thousand_cards_holds_every_card(
        browser: Any, serve_factory: Any, settings: Settings, tmp_path: Path) -> None:
    from squad.core.cards import CardSpec

    # Given 1,200 cards (more than one page of the API) and the page open
    env = _env(settings, tmp_path)
    store = open_store(settings.database_url)
    store.add_cards([CardSpec(card_id=f"L-{i:04d}", title=f"Card number {i}") for i in range(1200)])
    store.dispose()
    server = serve_factory(env)
    page, errors = open_page(browser, server.url)
    page.wait_for_selector('#conn[data-state="live"]')
    wait_js(page, "document.body.dataset.loaded === 'true'")
    lane = '.lane[data-lane="TODO"]'

    # Expect every card counted, a window of them in the page, more as the lane scrolls
    assert page.text_content(f"{lane} .lane-count") == "1200"
    assert "1200 of 1200 cards" in (page.text_content("#summary") or "")
    shown = page.locator(f"{lane} .card").count()
    assert 0 < shown < 1200
    page.eval_on_selector(f"{lane} .lane-body", "(b) => { b.scrollTop = b.scrollHeight; }")
    wait_js(page, f"document.querySelectorAll('{lane} .card').length > {shown}")

    # ... and the last card of the board's order (on the API's second page) found by the filter
    page.fill("#f-text", "L-1199")
    page.wait_for_selector(f'{lane} [data-card-id="L-1199"]')
    assert page.locator(f"{lane} .card").count() == 1
    assert errors.items == []


def test_cards_imported_together_appear_live_from_their_batch_events(
        browser: Any, serve_factory: Any, settings: Settings, tmp_path: Path) -> None:
    # Given the board open, live, on a store of one card
    env = _env(settings, tmp_path)
    _import(env, tmp_path, [{"card_id": "FIRST", "title": "Already there"}])
    server = serve_factory(env)
    page, errors = open_page(browser, server.url)
    page.wait_for_selector('#conn[data-state="live"]')
    wait_js(page, "document.body.dataset.loaded === 'true'")
    _in_lane(page, "FIRST", "TODO")
    page.evaluate("window.__sameDocument = true")
    lane = '.lane[data-lane="TODO"]'

    # When three cards are imported together (one `added` event names them)
    _import(env, tmp_path, [{"card_id": f"SMALL-{i}", "title": f"Small batch {i}"} for i in range(3)])
    # Expect each in the TODO lane, read by id
    for i in range(3):
        _in_lane(page, f"SMALL-{i}", "TODO", timeout_s=60)
    wait_js(page, f"document.querySelector('{lane} .lane-count').textContent === '4'")

    # When 1,500 more are imported (two events, more than the page reads card by card)
    _import(env, tmp_path, [{"card_id": f"BULK-{i:04d}", "title": f"Bulk {i}"} for i in range(1500)])
    # Expect every one counted on the board, the last found by the filter, without a reload or an error
    wait_js(page, f"document.querySelector('{lane} .lane-count').textContent === '1504'", timeout_s=120)
    assert "1504 of 1504 cards" in (page.text_content("#summary") or "")
    page.fill("#f-text", "BULK-1499")
    page.wait_for_selector(f'{lane} [data-card-id="BULK-1499"]')
    assert page.evaluate("window.__sameDocument") is True
    assert errors.items == []


#: Runs before the page's own scripts: collects what the page throws or shows as an error (a red
#: toast), so that a wait below ends at once on one
WATCH_ERRORS = """(() => {
  window.__errors = [];
  const note = (text) => window.__errors.push(String(text));
  window.addEventListener("error", (ev) => note(ev.message));
  window.addEventListener("unhandledrejection", (ev) => note(ev.reason));
  document.addEventListener("DOMContentLoaded", () => new MutationObserver((changes) => {
    for (const c of changes) {
      for (const n of c.addedNodes) if (n.classList && n.classList.contains("bad")) note(n.textContent);
    }
  }).observe(document.getElementById("toasts"), { childList: true }));
})();"""


def _shows(page: Any, condition: str) -> None:
    """Wait until `condition` (a JS expression) holds, or fail at once on an error the page reports."""
    wait_js(page, f"() => window.__errors.length > 0 || Boolean({condition})")
    assert page.evaluate("window.__errors") == []


def test_every_view_loads_its_modules_and_draws_without_an_error(
        browser: Any, serve_factory: Any, settings: Settings, tmp_path: Path,
        start_worker: Any) -> None:
    # Given a card that failed (a run, a log), one that cost money, one waiting, a worker and `squad serve`
    env = _env(settings, tmp_path)
    # a real Claude Code transcript (tests/agents/samples/SOURCES.md): 2 + 6,464 + 57,775 prompt tokens
    transcript = AGENTS / "samples" / "claude_codecontextbench_success_cached.jsonl"
    paid = [PY, str(AGENTS / "stream_json.py"), str(transcript)]
    with (tmp_path / "squad.toml").open("a", encoding="utf-8") as toml:
        toml.write(f'[agents.paid]\ncommand = {json.dumps(paid)}\nparser = "claude-stream-json"\n')
    _import(env, tmp_path, [
        {"card_id": "V-FAIL", "title": "Fails once", "agent": "fail", "squad": "qa", "max_retries": 0},
        {"card_id": "V-PAID", "title": "Costs a little", "agent": "paid", "squad": "web"},
        {"card_id": "V-NEXT", "title": "Waits for V-FAIL", "agent": "gate", "depends_on": ["V-FAIL"]},
    ])
    start_worker(env, concurrency=1, wait_ready=False)  # idle: it is there for the workers view
    res = subprocess.run([PY, "-m", "squad", "orchestrate", "--mode", "local", "--once", "--wait", "--interval", "0.2"],
                         env=env, capture_output=True, text=True, timeout=180, check=False)
    assert res.returncode == 1, res.stderr  # --wait: a card failed
    server = serve_factory(env)
    scripts: dict[str, str] = {}

    fetched: list[str] = []

    def note_script(response: Any) -> None:
        if response.request.resource_type == "script":
            scripts[response.url.rsplit("/", 1)[-1]] = response.headers.get("content-type", "")
        fetched.append(response.url)

    def before(page: Any) -> None:
        page.on("response", note_script)
        page.add_init_script(WATCH_ERRORS)

    # When the page is opened: every module of squad/web is loaded, as JavaScript, without an error
    page, errors = open_page(browser, server.url, before=before)
    assert errors.items == []
    assert set(scripts) == {p.name for p in WEB_DIR.glob("*.js")}
    assert all(t.startswith("text/javascript") for t in scripts.values()), scripts
    _shows(page, "document.body.dataset.loaded === 'true'")
    _in_lane(page, "V-FAIL", "FAILED")
    # ... its lanes are the store's statuses, read from GET /api/statuses, in the order it gives them
    assert f"{server.url}/api/statuses" in fetched
    statuses = httpx.get(f"{server.url}/api/statuses", timeout=10).json()
    lanes = page.evaluate("[...document.querySelectorAll('#view-board .lane')].map((l) => l.dataset.lane)")
    assert lanes == [row["status"] for row in statuses]

    # Expect each view to draw its rows
    assert (page.text_content('[data-card-id="V-PAID"] .c-cost') or "").startswith("$")
    page.click('a[data-view="workers"]')
    _shows(page, "document.querySelector('#workers-table tbody tr.online') || "
                 "document.querySelector('#workers-status').textContent.startsWith('workers:')")
    status = page.text_content("#workers-status") or ""
    assert status.startswith("Celery:"), status
    page.click('a[data-view="history"]')
    _shows(page, "document.querySelectorAll('#history-table tbody a[href^=\"#/cards/V-\"]').length === 2")
    assert "$" in (page.text_content("#history-table tbody") or "")
    page.click('a[data-view="metrics"]')
    _shows(page, "document.querySelector('#m-updated').textContent")
    updated = page.text_content("#m-updated") or ""
    assert updated.startswith("updated"), updated
    assert page.locator("#tiles .tile").count() == 9
    page.click('a[data-view="board"]')

    # ... the drawer: its fields, runs and log, the prompt, the run's archived log and back to the live one
    page.click('[data-card-id="V-FAIL"] .c-title')
    _shows(page, "document.querySelector('#d-runs tbody button[data-run]') && document.querySelector('#d-log .ln')")
    assert page.text_content("#d-status") == "FAILED"
    page.click("#d-prompt-box summary")
    _shows(page, "document.querySelector('#d-prompt').textContent")
    page.click("#d-runs tbody button[data-run]")
    _shows(page, "document.querySelector('#d-back-live')")
    page.click("#d-back-live")
    _shows(page, "document.querySelector('#d-log .ln')")
    page.keyboard.press("Escape")
    page.wait_for_selector("#detail", state="hidden")
    # ... a paid run's tokens: every prompt token the model read, and the prompt-cache split
    page.click('[data-card-id="V-PAID"] .c-title')
    _shows(page, "document.querySelector('#d-runs tbody td.d-tokens')")
    assert page.text_content("#d-runs tbody td.d-tokens") == "64,241 / 606cache: 57,775 read, 6,464 written"
    page.keyboard.press("Escape")
    page.wait_for_selector("#detail", state="hidden")

    # ... the filter bar and pause
    page.fill("#f-text", "v-next")
    _shows(page, "document.querySelectorAll('#view-board .card').length === 1")
    page.click("#pause")
    page.click("#pause")
    assert page.text_content("#pause") == "Pause"

    # ... and no error, no failed request for the page or its modules, on the way
    assert page.evaluate("window.__errors") == []
    assert errors.items == []


def test_after_a_run_the_finished_cards_are_on_the_first_screen_at_1400_px(
        browser: Any, serve_factory: Any, settings: Settings, tmp_path: Path) -> None:
    # Given six cards run to DONE (as after `squad up --demo`) and the board on a 1,400 px screen
    env = _env(settings, tmp_path)
    _import(env, tmp_path, [{"card_id": f"R-{i}", "title": f"Card {i}", "agent": "gate"} for i in range(6)])
    for i in range(6):
        (tmp_path / "gates" / f"R-{i}").touch()
    res = subprocess.run([PY, "-m", "squad", "orchestrate", "--mode", "local", "--once", "--wait", "--interval", "0.2"],
                         env=env, capture_output=True, text=True, timeout=180, check=False)
    assert res.returncode == 0, res.stderr
    server = serve_factory(env)
    page, errors = open_page(browser, server.url, before=lambda p: p.add_init_script(WATCH_ERRORS),
                             viewport={"width": 1400, "height": 800})
    _shows(page, "document.body.dataset.loaded === 'true'")
    _in_lane(page, "R-0", "DONE")
    # Expect the DONE lane and its cards inside the screen (empty lanes fold to narrow columns), the
    # empty lanes still named, and nothing to scroll to sideways
    box = page.locator('.lane[data-lane="DONE"]').bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1400, box
    card = page.locator('.lane[data-lane="DONE"] .card').first.bounding_box()
    assert card is not None and card["x"] + card["width"] <= 1400 and card["y"] + card["height"] <= 800, card
    assert page.locator(".lane.collapsed").count() >= 7
    assert "TODO" in (page.text_content('.lane[data-lane="TODO"] .lane-name') or "")
    assert page.evaluate("(() => { const b = document.querySelector('#view-board');"
                         " return b.scrollWidth <= b.clientWidth; })()")
    assert errors.items == []
