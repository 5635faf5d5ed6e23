"""API hardening (docs/security.md) against a real uvicorn server: the token on reads, Host and
Origin checks, body/field/page limits, short error bodies, and a token that never reaches a log."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from squad.core.cards import parse_card
from squad.core.settings import load_settings
from support.api import run_api, squad_serve
from support.cli import squad_env

TOKEN = "tok-Secret-0451"


def settings_with(redis_url: str, sqlite_url: str, **extra: Any) -> Any:
    return load_settings(redis_url=redis_url, database_url=sqlite_url, **extra)


# ---- item 9: the token covers reads -------------------------------------------------------------
def test_with_a_token_every_api_read_needs_it_but_the_page_and_health_do_not(redis_url: str,
                                                                            sqlite_url: str) -> None:
    with run_api(settings_with(redis_url, sqlite_url, api_token=TOKEN)) as api, api.client() as http:
        api.state.store.add_cards([parse_card({"card_id": "A", "title": "a"})])
        reads = ["/api/cards", "/api/cards/enhanced", "/api/cards/A", "/api/cards/A/runs", "/api/runs",
                 "/api/tasks/A/logs", "/api/workers", "/api/metrics", "/api/runs/1/log", "/api/nope"]
        for path in reads:
            assert http.get(path).status_code == 401, path
            assert http.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401, path
        for path in reads[:8]:
            assert http.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200, path
        assert http.get(f"/api/cards?token={TOKEN}").status_code == 200  # browsers: ?token= still works
        # The dashboard page, its assets, /health and /metrics load without it (to ask for one)
        for path in ("/", "/health", "/metrics"):
            assert http.get(path).status_code == 200, path


def test_protect_metrics_puts_health_and_metrics_behind_the_token(redis_url: str, sqlite_url: str) -> None:
    settings = settings_with(redis_url, sqlite_url, api_token=TOKEN, protect_metrics=True)
    with run_api(settings) as api, api.client() as http:
        for path in ("/health", "/metrics"):
            assert http.get(path).status_code == 401, path
            assert http.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code in (200, 503), path


def test_the_socket_takes_the_token_as_header_subprotocol_or_query(redis_url: str, sqlite_url: str) -> None:
    with run_api(settings_with(redis_url, sqlite_url, api_token=TOKEN)) as api:
        with pytest.raises(InvalidStatus):
            connect(api.ws_url, open_timeout=10).close()
        with connect(api.ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "connected"
        with connect(api.ws_url, subprotocols=["squad", f"squad.token.{TOKEN}"], open_timeout=10) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "squad"
            assert json.loads(ws.recv(timeout=10))["type"] == "connected"
        with connect(f"{api.ws_url}?token={TOKEN}", open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "connected"


def test_squad_serve_never_logs_the_token(redis_url: str, sqlite_url: str) -> None:
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url, SQUAD_API_TOKEN=TOKEN)
    with squad_serve(env) as (base, log):
        assert httpx.get(f"{base}/api/cards?token={TOKEN}", timeout=10).status_code == 200
        assert httpx.get(f"{base}/api/cards?token=wrong-{TOKEN}", timeout=10).status_code == 401
        with connect(f"{base.replace('http', 'ws', 1)}/ws/tasks?token={TOKEN}", open_timeout=10) as ws:
            ws.recv(timeout=10)
    out = log.text
    assert "/api/cards?token=***" in out, out  # the access log still shows the request
    assert TOKEN not in out, out


# ---- item 10: Host and Origin -------------------------------------------------------------------
def test_unknown_hosts_get_400_and_cross_site_origins_403(redis_url: str, sqlite_url: str) -> None:
    settings = settings_with(redis_url, sqlite_url, allowed_hosts=["squad.internal"])
    with run_api(settings) as api, api.client() as http:
        port = api.url.rsplit(":", 1)[1]
        assert http.get("/health", headers={"Host": "evil.example"}).status_code == 400
        assert http.get("/health", headers={"Host": f"rebind.attacker.test:{port}"}).status_code == 400
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", f"squad.internal:{port}"):
            assert http.get("/health", headers={"Host": host}).status_code == 200, host
        body = {"card_id": "O-1", "title": "o"}
        assert http.post("/api/cards", json=body, headers={"Origin": "http://evil.example"}).status_code == 403
        assert http.post("/api/cards", json=body, headers={"Origin": "null"}).status_code == 403
        assert api.state.store.list_cards() == []
        assert http.post("/api/cards", json=body, headers={"Origin": api.url}).status_code == 201
        assert http.get("/api/cards", headers={"Origin": "http://evil.example"}).status_code == 200  # reads: CORS
        with pytest.raises(InvalidStatus) as refused:
            connect(api.ws_url, origin="http://evil.example", open_timeout=10).close()  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403
        with connect(api.ws_url, origin=api.url, open_timeout=10) as ws:  # type: ignore[arg-type]
            assert json.loads(ws.recv(timeout=10))["type"] == "connected"


# ---- item 11: limits ----------------------------------------------------------------------------
def test_bodies_over_the_limit_are_413_and_fields_are_bounded_with_422(redis_url: str, sqlite_url: str) -> None:
    with run_api(settings_with(redis_url, sqlite_url)) as api, api.client() as http:
        big = {"card_id": "BIG", "title": "t", "description": "x" * (1024 * 1024 + 10)}
        assert http.post("/api/cards", json=big).status_code == 413

        def chunks() -> Any:
            yield b'{"card_id": "CH", "title": "t", "description": "'
            for _ in range(20):
                yield b"y" * 65536
            yield b'"}'

        chunked = http.post("/api/cards", content=chunks(), headers={"Content-Type": "application/json"})
        assert chunked.status_code == 413
        for field, value in (("labels", ["l"] * 51), ("labels", ["x" * 101]), ("depends_on", ["A"] * 201),
                             ("acceptance_criteria", ["c"] * 101), ("description", "d" * 70_000),
                             ("workdir", "/etc"), ("time_limit", 10**9), ("repo", "/etc"), ("repo", "../..")):
            res = http.post("/api/cards", json={"card_id": "F-1", "title": "t", field: value})
            assert res.status_code == 422, (field, res.text)
            assert field in res.text, (field, res.text)
        assert api.state.store.list_cards() == []
    with run_api(settings_with(redis_url, sqlite_url, max_body_bytes=1000)) as api, api.client() as http:
        assert http.post("/api/cards", json={"card_id": "S", "title": "t", "description": "x" * 2000}
                         ).status_code == 413


def test_a_card_id_git_cannot_use_as_a_branch_is_422(redis_url: str, sqlite_url: str) -> None:
    with run_api(settings_with(redis_url, sqlite_url)) as api, api.client() as http:
        for card_id in ("a.lock", "x..y"):
            res = http.post("/api/cards", json={"card_id": card_id, "title": "t"})
            assert res.status_code == 422 and "git branch name" in res.text, res.text
        assert api.state.store.list_cards() == []


def test_error_bodies_quote_only_a_short_excerpt_of_the_input(redis_url: str, sqlite_url: str) -> None:
    with run_api(settings_with(redis_url, sqlite_url)) as api, api.client() as http:
        res = http.post("/api/cards", json={"card_id": "Z" * 500_000, "title": "t"})
        assert res.status_code == 422
        assert len(res.content) < 4000, len(res.content)
        res = http.get("/api/cards/" + "%1b" * 5000)
        assert res.status_code in (404, 414, 422) and len(res.content) < 4000


def test_list_endpoints_page_by_default_with_a_total(redis_url: str, sqlite_url: str) -> None:
    with run_api(settings_with(redis_url, sqlite_url)) as api, api.client() as http:
        api.state.store.add_cards([parse_card({"card_id": f"C{i:04d}", "title": "t"}) for i in range(1005)])
        for path in ("/api/cards", "/api/cards/enhanced"):
            page = http.get(path)
            assert page.status_code == 200
            assert len(page.json()) == 100 and page.headers["X-Total-Count"] == "1005"
            assert len(http.get(f"{path}?limit=1000&offset=1000").json()) == 5
            assert http.get(f"{path}?limit=1001").status_code == 422
        assert http.get("/api/tasks/C0001/logs?limit=1001").status_code == 422
