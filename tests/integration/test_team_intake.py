"""GitHub intake (docs/team.md "GitHub issues in"): GitHub's own example deliveries (octokit/webhooks,
tests/samples/github/SOURCES.md) through the real route of a real server, signed right, wrong and
not at all, and replayed."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from pathlib import Path
from typing import Any

import httpx

from squad.core.retries import RetryPolicy
from squad.core.settings import load_settings
from squad.core.statuses import Status
from squad.store.card_store import CardStore, RunOutcome
from squad.store.team_store import TeamStore
from support.api import run_api
from support.paths import ROOT

GITHUB = ROOT / "tests" / "samples" / "github"
SECRET = "It's a Secret to Everybody"


def _sample(path: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GITHUB / path).read_text(encoding="utf-8"))
    return data


def _deliver(http: httpx.Client, event: str, payload: dict[str, Any] | bytes, *, secret: str | None = SECRET,
             delivery: str | None = None) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
               "Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/test"}
    if secret is not None:
        headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return http.post("/api/intake/github", content=body, headers=headers)


def _settings(redis_url: str, sqlite_url: str, tmp_path: Path, **extra: Any) -> Any:
    repo = tmp_path / "hello-world"
    extra.setdefault("allowed_roots", [str(tmp_path)])  # the mapped repository is one squad may work in
    return load_settings(redis_url=redis_url, database_url=sqlite_url, use_celery=False,
                         intake={"github": {"secret": SECRET, "label": "bug",
                                            "repos": {"Codertocat/Hello-World": str(repo)}}}, **extra)


def test_an_issue_with_the_label_becomes_a_card_and_a_replay_changes_nothing(redis_url: str, sqlite_url: str,
                                                                           tmp_path: Path) -> None:
    """Given GitHub's `issues opened` example (issue 1, label `bug`, Codertocat/Hello-World), when it
    arrives signed, card GH-1 holds the issue; the same delivery id again is ignored (202)."""
    with run_api(_settings(redis_url, sqlite_url, tmp_path)) as api, api.client() as http:
        opened = _sample("issues/opened.payload.json")
        first = _deliver(http, "issues", opened, delivery="d-1")
        assert first.status_code == 201, first.text
        card = api.state.store.get_card("GH-1")
        assert card.title == opened["issue"]["title"]
        assert card.description == opened["issue"]["body"]
        assert card.labels == ["bug"]
        assert card.repo == str(tmp_path / "hello-world")
        replay = _deliver(http, "issues", opened, delivery="d-1")
        assert replay.status_code == 202 and "seen before" in replay.json()["message"]
        # labeled, for an issue already a card: nothing new
        assert _deliver(http, "issues", _sample("issues/labeled.payload.json")).status_code == 202
        assert api.state.store.count_cards() == 1


def test_wrong_or_missing_signatures_are_401_and_change_nothing(redis_url: str, sqlite_url: str,
                                                                tmp_path: Path) -> None:
    with run_api(_settings(redis_url, sqlite_url, tmp_path, api_token="tok-unrelated-1")) as api, \
            api.client() as http:
        opened = _sample("issues/opened.payload.json")
        assert _deliver(http, "issues", opened, secret="not the secret").status_code == 401
        assert _deliver(http, "issues", opened, secret=None).status_code == 401
        # a signature of other bytes than those sent
        body = json.dumps(opened).encode()
        sig = "sha256=" + hmac.new(SECRET.encode(), body + b" ", hashlib.sha256).hexdigest()
        wrong = http.post("/api/intake/github", content=body, headers={
            "X-GitHub-Event": "issues", "X-GitHub-Delivery": "d-x", "X-Hub-Signature-256": sig})
        assert wrong.status_code == 401
        assert api.state.store.count_cards() == 0
        # the API token is not the credential here, and the signature alone is enough
        assert _deliver(http, "issues", opened).status_code == 201
        rows, _n = TeamStore(api.state.store).audit_rows()
        assert [(r["who"], r["action"], r["result"]) for r in rows][:2] == [
            ("github", "intake add", "201"), ("github", "intake refused", "401")]


def test_no_secret_configured_refuses_every_delivery(redis_url: str, sqlite_url: str) -> None:
    settings = load_settings(redis_url=redis_url, database_url=sqlite_url, use_celery=False)
    with run_api(settings) as api, api.client() as http:
        assert _deliver(http, "issues", _sample("issues/opened.payload.json")).status_code == 401


def test_ping_and_other_events_are_202_and_ignored(redis_url: str, sqlite_url: str, tmp_path: Path) -> None:
    with run_api(_settings(redis_url, sqlite_url, tmp_path)) as api, api.client() as http:
        ping = _deliver(http, "ping", _sample("ping/payload.json"))
        assert ping.status_code == 202 and ping.json()["action"] == "ignored"
        push = _deliver(http, "push", {"ref": "refs/heads/main"})
        assert push.status_code == 202
        unlabeled = _sample("issues/opened.payload.json")
        unlabeled["issue"]["labels"] = []  # the example without its label
        assert _deliver(http, "issues", unlabeled).status_code == 202
        assert api.state.store.count_cards() == 0


def test_edited_updates_a_todo_card_closed_cancels_it(redis_url: str, sqlite_url: str, tmp_path: Path) -> None:
    with run_api(_settings(redis_url, sqlite_url, tmp_path)) as api, api.client() as http:
        assert _deliver(http, "issues", _sample("issues/opened.payload.json")).status_code == 201
        edited = _sample("issues/edited.payload.json")
        edited["issue"]["title"] = "Spelling error in the README file (now with details)"  # the edit itself
        answer = _deliver(http, "issues", edited)
        assert answer.status_code == 200 and answer.json()["action"] == "edit", answer.text
        assert api.state.store.get_card("GH-1").title.endswith("(now with details)")
        closed = _sample("issues/opened.payload.json")  # octokit publishes no issues/closed example
        closed["action"], closed["issue"]["state"] = "closed", "closed"
        answer = _deliver(http, "issues", closed)
        assert answer.status_code == 200 and answer.json()["action"] == "cancel", answer.text
        assert api.state.store.get_card("GH-1").status == Status.CANCELLED
        # an edit of a card no longer TODO changes nothing
        edited["issue"]["title"] = "too late"
        assert _deliver(http, "issues", edited).status_code == 202
        assert api.state.store.get_card("GH-1").title.endswith("(now with details)")


def _fail(store: CardStore, card_id: str) -> None:
    """The card's one attempt, failed, through the store's real transitions."""
    task_id = str(uuid.uuid4())
    assert store.enqueue(card_id, task_id, expected=[Status.TODO])
    claim = store.claim(card_id, task_id, "w1@test", 30)
    assert claim is not None
    store.finish(claim, RunOutcome(succeeded=False, error="boom", exit_code=1), RetryPolicy.fixed(0, delay_s=60))


def test_squad_retry_comment_retries_only_for_trusted_commenters(redis_url: str, sqlite_url: str,
                                                                 tmp_path: Path) -> None:
    with run_api(_settings(redis_url, sqlite_url, tmp_path)) as api, api.client() as http:
        assert _deliver(http, "issues", _sample("issues/opened.payload.json")).status_code == 201
        _fail(api.state.store, "GH-1")
        comment = _sample("issue_comment/created.payload.json")
        assert _deliver(http, "issue_comment", comment).status_code == 202  # the example's text is no command
        comment["comment"]["body"] = "/squad retry please"
        comment["comment"]["author_association"] = "NONE"
        refused = _deliver(http, "issue_comment", comment)
        assert refused.status_code == 202 and "NONE" in refused.json()["message"]
        assert api.state.store.get_card("GH-1").status == Status.FAILED
        comment["comment"]["author_association"] = "OWNER"  # as in GitHub's example
        done = _deliver(http, "issue_comment", comment)
        assert done.status_code == 200 and done.json()["action"] == "retry", done.text
        assert api.state.store.get_card("GH-1").status == Status.QUEUED
