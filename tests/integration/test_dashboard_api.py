"""The API the dashboard reads beyond the core list of docs/api.md: card extras, run history, metric series, bulk
retry, prompts, the token check and worker leases (real server, Redis and store)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx

from squad.agents.prompts import prompt_path
from squad.api.history import leases_by_worker
from squad.core.settings import Settings, load_settings
from squad.core.statuses import Status
from squad.live.events import EventBus
from squad.store.card_store import CardStore
from support.api import by_id, run_api
from support.store import seed


def _ts(iso: str | None) -> float:
    assert iso is not None
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_enhanced_cards_carry_the_board_extras_and_can_be_read_by_id(api: Any, settings: Settings) -> None:
    # Given a retrying, a done, a running card with a live log line, and a card never run
    store: CardStore = api.state.store
    seed(store, "X-RETRY", Status.RETRYING, error="rate limit")
    seed(store, "X-DONE", Status.DONE)
    task = seed(store, "X-RUN", Status.IN_PROGRESS, time_limit=120)
    seed(store, "X-TODO", Status.TODO)
    EventBus(settings.events, store.redis_keys).append_logs("X-RUN", task, [("2026-01-01T00:00:00Z", "INFO", "hello")])

    with api.client() as http:
        # When three of them are read by id (one unknown, one twice)
        res = http.get("/api/cards/enhanced", params=[("card_id", "X-RUN"), ("card_id", "X-RETRY"),
                                                      ("card_id", "NOPE"), ("card_id", "X-RUN"),
                                                      ("card_id", "X-DONE")])
        bad = http.get("/api/cards/enhanced", params={"card_id": "not a card id"})

    # Expect just those, in the order asked, with what a board card shows
    assert res.status_code == 200, res.text
    cards = {c["card_id"]: c for c in res.json()}
    assert [c["card_id"] for c in res.json()] == ["X-RUN", "X-RETRY", "X-DONE"]
    assert _ts(cards["X-RETRY"]["next_attempt_at"]) > time.time()
    assert cards["X-DONE"]["cost_usd"] == 0.25 and cards["X-DONE"]["next_attempt_at"] is None
    assert abs(_ts(cards["X-RUN"]["last_output_at"]) - time.time()) < 120
    assert cards["X-RUN"]["time_limit_s"] == 120
    assert cards["X-DONE"]["time_limit_s"] == settings.time_limit and cards["X-DONE"]["last_output_at"] is None
    assert bad.status_code == 422, bad.text  # a malformed id is refused, an unknown one left out


def test_board_is_the_compact_shape_of_the_enhanced_cards_paged_in_board_order(api: Any, settings: Settings) -> None:
    # Given cards in several statuses, one of them running with a live log line and its own limits
    store: CardStore = api.state.store
    seed(store, "K-RETRY", Status.RETRYING, error="rate limit", priority=7)
    seed(store, "K-DONE", Status.DONE, squad="web", agent="claude")
    task = seed(store, "K-RUN", Status.IN_PROGRESS, progress=40, time_limit=120, max_retries=1, priority=9)
    seed(store, "K-QUEUED", Status.QUEUED, priority=2)
    seed(store, "K-FAIL", Status.FAILED, error="exit 1", priority=7)
    seed(store, "K-TODO", Status.TODO)
    EventBus(settings.events, store.redis_keys).append_logs("K-RUN", task, [("2026-01-01T00:00:00Z", "INFO", "hi")])

    with api.client() as http:
        # When the board is read whole, in pages of two, and by id; and the same cards enhanced
        whole = http.get("/api/board", params={"limit": 1000})
        pages = [http.get("/api/board", params={"limit": 2, "offset": offset}) for offset in (0, 2, 4)]
        named = http.get("/api/board", params=[("card_id", "K-TODO"), ("card_id", "NOPE"), ("card_id", "K-RUN")])
        enhanced = http.get("/api/cards/enhanced", params={"limit": 1000}).json()
        refused = [http.get(path, params=params) for path, params in (
            ("/api/board", {"limit": 0}), ("/api/board", {"limit": 1001}), ("/api/board", {"card_id": "not a card id"}),
            ("/api/board", {"status": "NOPE"}), ("/api/board", {"offset": "1.0"}),
            ("/api/board", [("offset", "1"), ("offset", "2")]),
            ("/api/cards", [("status", "TODO"), ("status", "DONE")]))]

    # Expect every card in board order (most urgent, then oldest), the total in X-Total-Count
    assert whole.status_code == 200, whole.text
    board = whole.json()
    assert [c["card_id"] for c in board] == [c["card_id"] for c in enhanced]
    assert whole.headers["X-Total-Count"] == "6" and all(p.headers["X-Total-Count"] == "6" for p in pages)
    assert [c["card_id"] for p in pages for c in p.json()] == [c["card_id"] for c in board]
    assert [c["card_id"] for c in named.json()] == ["K-TODO", "K-RUN"] and "X-Total-Count" not in named.headers
    assert [r.status_code for r in refused] == [422] * 7
    assert refused[5].json()["detail"] == "query offset: given more than once"  # not the last one silently
    # ... each card saying what /api/cards/enhanced says, in fewer fields (none without a value)
    for card, full in zip(board, enhanced, strict=True):
        task = full["celery_task"] or {}
        assert card["status"] == full["status"] and card["progress"] == full["progress"]
        assert card["attempts"] == full["attempts"] and card["cost_usd"] == full["cost_usd"]
        assert card["time_limit_s"] == full["time_limit_s"] and card.get("last_error") == full["last_error"]
        assert card.get("task_status") == task.get("status") and card.get("worker") == task.get("worker")
        assert card.get("next_attempt_at") == full["next_attempt_at"]
        assert card.get("last_output_at") == full["last_output_at"]
        assert None not in card.values() and "description" not in card and "celery_task" not in card
        if task.get("elapsed") is not None and card["status"] != "IN_PROGRESS":
            assert card["elapsed"] == task["elapsed"]
    cards = by_id(board)
    assert cards["K-RUN"]["max_retries"] == 1 and cards["K-DONE"]["max_retries"] == settings.max_retries
    assert cards["K-RUN"]["time_limit_s"] == 120 and cards["K-RUN"]["elapsed"] >= 0
    assert abs(_ts(cards["K-RUN"]["last_output_at"]) - time.time()) < 120
    assert cards["K-FAIL"]["task_status"] == "FAILURE" and cards["K-DONE"]["squad"] == "web"
    assert "task_status" not in cards["K-TODO"] and "elapsed" not in cards["K-QUEUED"]


def test_run_history_is_paged_on_the_server_newest_first_and_filtered(api: Any) -> None:
    # Given five settled runs across two squads and two agents
    store: CardStore = api.state.store
    seed(store, "H-1", Status.DONE, squad="web", agent="claude", title="Add login")
    seed(store, "H-2", Status.FAILED, squad="web", agent="codex", title="Fix logout", error="exit 2")
    seed(store, "H-3", Status.DONE, squad="api", agent="claude", title="Rate limits")
    seed(store, "H-4", Status.FAILED, squad="api", agent="claude", title="Login audit", error="exit 3")
    seed(store, "H-5", Status.DONE, squad="api", agent="codex", title="Docs")

    with api.client() as http:
        # When the pages and filters are read
        first = http.get("/api/runs", params={"limit": 2})
        second = http.get("/api/runs", params={"limit": 2, "offset": 2})
        failed = http.get("/api/runs", params={"status": "failed"})
        api_claude = http.get("/api/runs", params={"squad": "api", "agent": "claude"})
        text = http.get("/api/runs", params={"q": "LOGIN"})
        bad = http.get("/api/runs", params={"status": "nope", "limit": 0})

    # Expect pages of the newest runs with the total in X-Total-Count
    assert [r["card_id"] for r in first.json()] == ["H-5", "H-4"] and first.headers["X-Total-Count"] == "5"
    assert [r["card_id"] for r in second.json()] == ["H-3", "H-2"]
    assert {r["card_id"] for r in failed.json()} == {"H-2", "H-4"} and failed.headers["X-Total-Count"] == "2"
    assert {r["card_id"] for r in api_claude.json()} == {"H-3", "H-4"}
    assert {r["card_id"] for r in text.json()} == {"H-1", "H-4"}
    row = failed.json()[0]
    assert row["title"] == "Login audit" and row["squad"] == "api" and row["error"] == "exit 3"
    assert row["worker"] == "w1@test" and row["cost_usd"] == 0.25
    assert bad.status_code == 422 and len(bad.json()["problems"]) == 2


def test_metrics_series_buckets_outcomes_retries_cost_and_queue_depth(api: Any) -> None:
    # Given runs that ended now (two squads), a card retrying, and a card queued
    store: CardStore = api.state.store
    seed(store, "M-1", Status.DONE, squad="web")
    seed(store, "M-2", Status.DONE, squad="api")
    seed(store, "M-3", Status.FAILED, squad="api")
    seed(store, "M-4", Status.QUEUED)

    with api.client() as http:
        # When the last hour is read, and a bad window
        body = http.get("/api/metrics/series", params={"window_s": 3600}).json()
        week = http.get("/api/metrics/series", params={"window_s": 7 * 86400}).json()
        bad = http.get("/api/metrics/series", params={"window_s": 10})

    # Expect one-minute buckets adding up to the runs, with cost per squad and day, and the queue now
    assert body["bucket_s"] == 60 and 60 <= len(body["buckets"]) <= 61
    assert (body["succeeded"], body["failed"], body["retried"]) == (2, 1, 0)
    assert sum(b["succeeded"] for b in body["buckets"]) == 2 and sum(b["failed"] for b in body["buckets"]) == 1
    assert body["error_rate"] == round(1 / 3, 4) and body["run_time_p50"] is not None
    assert {s["squad"]: s["cost_usd"] for s in body["cost_per_squad"]} == {"api": 0.5, "web": 0.25}
    assert len(body["cost_per_day"]) == 14 and body["cost_per_day"][-1]["cost_usd"] == 0.75
    assert body["buckets"][-1]["queue_depth"] == 1
    assert week["bucket_s"] == 7200 and len(week["buckets"]) <= 90
    assert bad.status_code == 422


def test_bulk_retry_answers_for_each_card_on_its_own(api: Any) -> None:
    # Given a FAILED card, a DONE card and an id that does not exist
    store: CardStore = api.state.store
    seed(store, "R-FAIL", Status.FAILED)
    seed(store, "R-DONE", Status.DONE)

    with api.client() as http:
        # When all three are retried at once
        res = http.post("/api/tasks/retry", json={"card_ids": ["R-FAIL", "R-DONE", "R-NONE", "R-FAIL"]})
        empty = http.post("/api/tasks/retry", json={"card_ids": []})

    # Expect the failed one queued again, the others refused with the code a single retry gives
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["retried"] == 1
    assert [(r["card_id"], r["ok"], r["status_code"]) for r in body["results"]] == [
        ("R-FAIL", True, 200), ("R-DONE", False, 400), ("R-NONE", False, 404)]
    assert body["results"][0]["new_task_id"]
    assert store.get_card("R-FAIL").status == Status.QUEUED and store.get_card("R-DONE").status == Status.DONE
    assert empty.status_code == 422


def test_prompt_of_an_attempt_is_read_back_from_the_workdir(api: Any, settings: Settings) -> None:
    # Given a card that ran twice, whose prompts the worker wrote
    store: CardStore = api.state.store
    seed(store, "P-1", Status.RETRYING)
    seed(store, "P-NEW", Status.TODO)
    for attempt in (1, 2):
        path = prompt_path(settings.workdir, "P-1", attempt)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# prompt of attempt {attempt}\n", encoding="utf-8")
    with store.engine.begin() as conn:  # the second attempt's number, as a second claim would set it
        conn.exec_driver_sql("UPDATE cards SET attempts = 2 WHERE card_id = 'P-1'")

    with api.client() as http:
        latest = http.get("/api/cards/P-1/prompt")
        first = http.get("/api/cards/P-1/prompt", params={"attempt": 1})
        missing = http.get("/api/cards/P-1/prompt", params={"attempt": 3})
        never = http.get("/api/cards/P-NEW/prompt")
        unknown = http.get("/api/cards/NOPE/prompt")

    assert latest.json() == {"card_id": "P-1", "attempt": 2, "prompt": "# prompt of attempt 2\n"}
    assert first.json()["prompt"] == "# prompt of attempt 1\n"
    assert missing.status_code == 404 and "no attempt 3" in missing.json()["detail"]
    assert never.status_code == 404 and "not run yet" in never.json()["detail"]
    assert unknown.status_code == 404


def test_auth_check_tells_whether_the_token_is_accepted(api: Any, redis_url: str, sqlite_url: str) -> None:
    with api.client() as http:
        assert http.get("/api/auth").json() == {"authorized": True, "token_required": False, "name": "anonymous",
                                                "role": "admin"}
    guarded = load_settings(redis_url=redis_url, database_url=sqlite_url, api_token="tok-123")
    with run_api(guarded) as server:
        assert httpx.get(server.url + "/api/auth").status_code == 401
        assert httpx.get(server.url + "/api/auth", headers={"Authorization": "Bearer nope"}).status_code == 401
        ok = httpx.get(server.url + "/api/auth", headers={"Authorization": "Bearer tok-123"})
        assert ok.status_code == 200 and ok.json() == {"authorized": True, "token_required": True,
                                                       "name": "SQUAD_API_TOKEN", "role": "admin"}


def test_leases_are_listed_per_worker(api: Any) -> None:
    store: CardStore = api.state.store
    seed(store, "L-1", Status.IN_PROGRESS)
    seed(store, "L-2", Status.IN_PROGRESS)
    seed(store, "L-3", Status.DONE)
    assert leases_by_worker(store) == {"w1@test": ["L-1", "L-2"]}
