"""Tokens with roles and the audit log (docs/team.md), against a real uvicorn server and the real
`squad` command: each write route by each role, 401 for unknown and revoked tokens, audit rows
for API and CLI writes, "cancelled by NAME" in a card's detail."""

from __future__ import annotations

import getpass
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from squad.api.app import create_app
from squad.api.auth import ROUTES, access_for
from squad.core.settings import load_settings
from squad.core.statuses import Status
from squad.store.card_store import CardStore
from squad.store.team_store import TeamStore
from squad.team.tokens import Role, create_token
from support.api import run_api
from support.cli import run_cli, squad_env
from support.store import seed

ENV_TOKEN = "tok-Env-Admin-0451"
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def _routes(app: Any) -> list[tuple[str, str]]:
    table: list[tuple[str, str]] = app.state.route_table
    assert len(table) > 20
    return table


def _tokens(store: CardStore) -> dict[Role, str]:
    team = TeamStore(store)
    return {role: create_token(team, f"{role.label}-user", role) for role in Role}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _concrete(path: str) -> str:
    return path.replace("{card_id}", "NOPE-1").replace("{run_id}", "1")


def test_every_write_route_has_a_role(redis_url: str, sqlite_url: str) -> None:
    """A write route added without an entry in `auth.ROUTES` would need `admin` (closed), and fails here."""
    app = create_app(load_settings(redis_url=redis_url, database_url=sqlite_url))
    missing = [(m, p) for m, p in _routes(app) if m in WRITES and (m, p) not in ROUTES]
    assert not missing, f"write routes without a role in squad.api.auth.ROUTES: {missing}"


def test_each_write_route_by_each_role(redis_url: str, sqlite_url: str) -> None:
    """Given a token of each role, when each calls each write route, a role below the route's gets 403
    naming the role needed, and a role at or above it gets past the role check (whatever the route
    then says about card NOPE-1)."""
    settings = load_settings(redis_url=redis_url, database_url=sqlite_url)
    with run_api(settings) as api, api.client() as http:
        tokens = _tokens(api.state.store)
        writes = [(m, p) for m, p in _routes(api.app) if m in WRITES]
        assert len(writes) >= 6
        for method, path in writes:
            needed = access_for(method, path).role
            for role, token in tokens.items():
                answer = http.request(method, _concrete(path), json={}, headers=_bearer(token))
                if needed is None:  # a webhook: its signature is the credential, never a token
                    assert answer.status_code == 401 and "Signature" in answer.json()["detail"], (path, role)
                elif role < needed:
                    assert answer.status_code == 403, (method, path, role, answer.text)
                    assert f"needs the {needed.label} role" in answer.json()["detail"]
                else:
                    assert answer.status_code not in (401, 403), (method, path, role, answer.text)
        # reads: every role; the audit log: admin only
        for role, token in tokens.items():
            assert http.get("/api/cards", headers=_bearer(token)).status_code == 200
            audit = http.get("/api/audit", headers=_bearer(token))
            assert audit.status_code == (200 if role == Role.ADMIN else 403), (role, audit.text)


def test_unknown_revoked_and_missing_tokens_get_401_and_the_env_token_is_admin(redis_url: str,
                                                                             sqlite_url: str) -> None:
    settings = load_settings(redis_url=redis_url, database_url=sqlite_url, api_token=ENV_TOKEN)
    with run_api(settings) as api, api.client() as http:
        team = TeamStore(api.state.store)
        viewer = create_token(team, "vic", Role.VIEWER)
        assert http.get("/api/cards").status_code == 401
        assert http.get("/api/cards", headers=_bearer(viewer[:-2] + "xx")).status_code == 401
        assert http.get("/api/cards", headers=_bearer("sqt_0000000000000000_" + "a" * 40)).status_code == 401
        me = http.get("/api/auth", headers=_bearer(viewer)).json()
        assert (me["name"], me["role"], me["token_required"]) == ("vic", "viewer", True)
        admin = http.get("/api/auth", headers=_bearer(ENV_TOKEN)).json()
        assert (admin["name"], admin["role"]) == ("SQUAD_API_TOKEN", "admin")
        assert http.get("/api/audit", headers=_bearer(ENV_TOKEN)).status_code == 200
        # the viewer reads the socket too; after a revoke neither the API nor the socket takes it
        with connect(f"{api.ws_url}?token={viewer}", open_timeout=10) as sock:
            assert '"connected"' in str(sock.recv(timeout=10))
        team.revoke_token("vic")
        assert http.get("/api/cards", headers=_bearer(viewer)).status_code == 401
        with pytest.raises(InvalidStatus), connect(f"{api.ws_url}?token={viewer}", open_timeout=10):
            pass
        listed = {t.name: t for t in team.tokens()}
        assert listed["vic"].revoked_at is not None and listed["vic"].last_used_at is not None


def test_api_writes_are_audited_with_name_card_client_and_result(redis_url: str, sqlite_url: str) -> None:
    """Given an operator and a viewer, when the operator cancels a card and the viewer tries to, the
    audit log has both (the refusal with 403), and the card's detail says who cancelled it."""
    settings = load_settings(redis_url=redis_url, database_url=sqlite_url)
    with run_api(settings) as api, api.client() as http:
        tokens = _tokens(api.state.store)
        seed(api.state.store, "A-1", Status.QUEUED)
        assert http.post("/api/tasks/A-1/cancel", headers=_bearer(tokens[Role.VIEWER])).status_code == 403
        assert http.post("/api/tasks/A-1/cancel", headers=_bearer(tokens[Role.OPERATOR])).status_code == 200
        made = http.post("/api/cards", json={"card_id": "B-1", "title": "b"}, headers=_bearer(tokens[Role.OPERATOR]))
        assert made.status_code == 201
        rows = http.get("/api/audit", headers=_bearer(tokens[Role.ADMIN]), params={"limit": 2})
        assert rows.headers["X-Total-Count"] == "3"
        newest, second = rows.json()
        assert (newest["who"], newest["action"], newest["card_id"], newest["result"]) == \
            ("operator-user", "add", "B-1", "201")
        assert (second["who"], second["action"], second["card_id"], second["result"], second["client"]) == \
            ("operator-user", "cancel", "A-1", "200", "127.0.0.1")
        page2 = http.get("/api/audit", headers=_bearer(tokens[Role.ADMIN]), params={"limit": 2, "offset": 2}).json()
        assert [(r["who"], r["result"]) for r in page2] == [("viewer-user", "403")]
        only_a = http.get("/api/audit", headers=_bearer(tokens[Role.ADMIN]), params={"card_id": "A-1"}).json()
        assert len(only_a) == 2
        recent = http.get("/api/audit", headers=_bearer(tokens[Role.ADMIN]), params={"since": "1h"})
        assert recent.headers["X-Total-Count"] == "3"
        bad = http.get("/api/audit", headers=_bearer(tokens[Role.ADMIN]), params={"since": "last tuesday"})
        assert bad.status_code == 422 and "ISO time" in bad.json()["detail"]
        detail = http.get("/api/cards/A-1", headers=_bearer(tokens[Role.VIEWER])).json()
        assert [(a["action"], a["who"]) for a in detail["actions"]] == [("cancel", "operator-user")]


def test_cli_writes_are_audited_as_the_os_user(redis_url: str, sqlite_url: str, tmp_path: Any) -> None:
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url, USE_CELERY="false",
                    SQUAD_CONFIG=str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")
    assert run_cli("card", "add", "--id", "C-1", "--title", "c", env=env).returncode == 0
    assert run_cli("cancel", "C-1", env=env).returncode == 0
    refused = run_cli("cancel", "NOPE-9", env=env)
    assert refused.returncode == 2
    shown = run_cli("audit", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    import json

    rows = json.loads(shown.stdout)
    who = f"cli:{getpass.getuser()}"
    assert [(r["who"], r["action"], r["card_id"], r["result"][:5]) for r in rows] == [
        (who, "cancel", "NOPE-9", "error"), (who, "cancel", "C-1", "ok"), (who, "add", "C-1", "ok")]
    by_card = json.loads(run_cli("audit", "--card", "C-1", "--since", "1h", "--json", env=env).stdout)
    assert len(by_card) == 2
    bad = run_cli("audit", "--since", "yesterday-ish", env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_token_commands_print_once_list_and_revoke(redis_url: str, sqlite_url: str, tmp_path: Any) -> None:
    (tmp_path / "none.toml").write_text("")
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url, SQUAD_CONFIG=str(tmp_path / "none.toml"))
    made = run_cli("token", "create", "ci-bot", "--role", "operator", env=env)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("sqt_")
    listed = run_cli("token", "list", "--json", env=env)
    assert token not in listed.stdout and '"ci-bot"' in listed.stdout and '"operator"' in listed.stdout
    assert run_cli("token", "create", "x", "--role", "root", env=env).returncode == 2
    assert run_cli("token", "create", "ci-bot", env=env).returncode == 2  # a live one has that name
    store = CardStore(sqlite_url)
    try:
        settings = load_settings(redis_url=redis_url, database_url=sqlite_url)
        with run_api(settings, store=store) as api, httpx.Client(base_url=api.url, timeout=30) as http:
            assert http.get("/api/auth", headers=_bearer(token)).json()["role"] == "operator"
            assert run_cli("token", "revoke", "ci-bot", env=env).returncode == 0
            assert http.get("/api/auth", headers=_bearer(token)).status_code == 401
        assert run_cli("token", "revoke", "ci-bot", env=env).returncode == 2
    finally:
        store.dispose()
