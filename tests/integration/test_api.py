"""The HTTP API (docs/api.md) against a real uvicorn server, a real redis-server and real stores.

Cards are seeded through the store's own transitions (enqueue, claim, finish), Redis through the
same streams and keys the workers write; no mocks. The worker-driven cases are in test_ws.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, update

from squad.api.app import WEB_DIR
from squad.api.server import serve
from squad.api.task_view import CELERY_META_PREFIX
from squad.core.cards import parse_card
from squad.core.errors import ConfigError
from squad.core.retries import RetryPolicy
from squad.core.settings import Settings, load_settings
from squad.core.statuses import STATUS_FACTS, Status
from squad.live.events import EventBus
from squad.store.card_store import CardStore, RunOutcome
from squad.store.tables import runs as runs_t
from support.api import ApiServer, api_answers, by_id, run_api
from support.cli import run_cli, squad_env
from support.processes import free_port, kill_tree, wait_for
from support.redis_server import RedisServer
from support.store import add, seed, seed_verified, status_of

HEALTH_KEYS = {"status", "timestamp", "version", "database", "redis", "celery", "celery_workers",
               "active_websockets", "execution_mode"}
CARD_KEYS = {"card_id", "title", "description", "acceptance_criteria", "squad", "agent", "priority", "depends_on",
             "labels", "workdir", "time_limit", "soft_time_limit", "max_retries", "status", "attempts", "progress",
             "current_step", "celery_task_id", "last_error", "created_at", "updated_at", "repo", "base", "review",
             "feedback", "parent", "question", "choices", "verify", "land", "land_when", "conflicts", "landed_commit"}
ENHANCED_EXTRAS = {"celery_task", "logs_available", "next_attempt_at", "cost_usd", "last_output_at", "time_limit_s"}
TASK_KEYS = {"task_id", "status", "progress", "current_step", "elapsed", "eta", "worker", "retries",
             "max_retries", "result", "traceback"}


# ---- fixtures and seeding helpers ----------------------------------------------------------------
@pytest.fixture
def store(api: ApiServer) -> CardStore:
    return api.state.store


@pytest.fixture
def http(api: ApiServer) -> Iterator[httpx.Client]:
    with api.client() as client:
        yield client


# ---- health -----------------------------------------------------------------------------------
def test_health_has_exactly_the_spec_keys_and_sees_database_and_redis(http: httpx.Client) -> None:
    # When
    res = http.get("/health")

    # Expect
    assert res.status_code == 200
    body = res.json()
    assert set(body) == HEALTH_KEYS
    assert body["database"] == "connected"
    assert body["redis"] == "connected"
    assert body["celery"] == "no_workers" and body["celery_workers"] == 0
    assert body["execution_mode"] == "celery"
    assert body["active_websockets"] == 0
    assert body["version"]


def test_health_answers_quickly_with_redis_error_when_redis_is_dead(sqlite_url: str) -> None:
    # Given a Redis URL where nothing listens
    settings = load_settings(redis_url=f"redis://127.0.0.1:{free_port()}", database_url=sqlite_url)
    with run_api(settings) as api, api.client() as http:
        # When
        started = time.monotonic()
        res = http.get("/health")
        took = time.monotonic() - started

    # Expect a fast, honest answer
    assert took < 2.5, took
    body = res.json()
    assert (body["redis"], body["celery"], body["execution_mode"]) == ("error", "error", "local")
    assert body["database"] == "connected" and body["status"] == "degraded"


def test_health_answers_quickly_when_redis_hangs(tmp_path: Any, sqlite_url: str) -> None:
    # Given a Redis that accepts connections but never answers (stopped with SIGSTOP)
    server = RedisServer(tmp_path / "hung-redis")
    server.start()
    assert server.proc is not None
    settings = load_settings(redis_url=server.url, database_url=sqlite_url)
    try:
        with run_api(settings) as api, api.client() as http:
            server.proc.send_signal(signal.SIGSTOP)
            # When
            started = time.monotonic()
            body = http.get("/health").json()
            took = time.monotonic() - started
            # ... and cards still list (the store does not need Redis)
            assert http.get("/api/cards").status_code == 200
            server.proc.send_signal(signal.SIGCONT)
    finally:
        if server.proc is not None:
            server.proc.send_signal(signal.SIGCONT)
        server.stop(kill=True)

    # Expect every probe bounded
    assert took < 3.0, took
    assert body["redis"] == "error" and body["celery"] == "error"


def test_health_in_local_mode_says_not_available(redis_url: str, sqlite_url: str) -> None:
    settings = load_settings(redis_url=redis_url, database_url=sqlite_url, use_celery=False)
    with run_api(settings) as api, api.client() as http:
        body = http.get("/health").json()
    assert (body["celery"], body["execution_mode"], body["status"]) == ("not_available", "local", "healthy")


# ---- cards ------------------------------------------------------------------------------------
def test_post_card_creates_it_with_the_card_list_shape(http: httpx.Client, redis_server: RedisServer,
                                                        store: CardStore) -> None:
    # When
    res = http.post("/api/cards", json={"card_id": "NEW-1", "title": "Build it", "priority": 7,
                                        "labels": ["api"], "acceptance_criteria": ["works"]})

    # Expect a stored TODO card with every field of `card list --json`, and a status event
    assert res.status_code == 201, res.text
    card = res.json()
    assert set(card) == CARD_KEYS
    assert (card["status"], card["priority"], card["attempts"]) == ("TODO", 7, 0)
    assert http.get("/api/cards/NEW-1").json()["title"] == "Build it"
    events = redis_server.client(2).xrange(store.redis_keys.task_updates)
    assert [(f["type"], f["card_id"], f["status"]) for _id, f in events] == [("status", "NEW-1", "TODO")]


@pytest.mark.parametrize(("body", "expected"), [
    ({"card_id": "bad id", "title": "x"}, "card bad id: card_id"),
    ({"card_id": "P-1", "title": "x", "priority": 12}, "card P-1: priority"),
    ({"card_id": "P-2", "title": "x", "priority": True}, "card P-2: priority"),
    ({"card_id": "P-3", "title": ""}, "card P-3: title"),
    ({"card_id": "P-4", "title": "x", "colour": "red"}, "card P-4: colour: unknown field"),
    ({"card_id": "P-5", "title": "x", "depends_on": ["GHOST"]}, "card P-5: depends_on unknown card 'GHOST'"),
    ({"card_id": "P-6", "title": "nul\u0000byte"}, "card P-6: title: must not contain NUL"),
    ({"card_id": "P-7", "title": "x", "squad": "s" * 101}, "card P-7: squad: String should have at most 100"),
    ({"card_id": "P-9", "title": "x", "max_retries": False}, "card P-9: max_retries"),
    ({"title": "no id"}, "card_id: Field required"),
    ([{"card_id": "P-8"}], "body"),
])
def test_post_card_rejects_invalid_cards_with_422_and_one_line_per_problem(
        http: httpx.Client, body: Any, expected: str) -> None:
    res = http.post("/api/cards", json=body)
    assert res.status_code == 422, res.text
    problems = res.json()["problems"]
    assert any(expected in p for p in problems), problems


def test_post_card_reports_every_problem_at_once_and_stores_nothing(http: httpx.Client) -> None:
    res = http.post("/api/cards", json={"card_id": "M-1", "title": "", "priority": -1, "x": 1})
    assert res.status_code == 422
    assert len(res.json()["problems"]) == 3
    assert http.get("/api/cards/M-1").status_code == 404


def test_post_card_twice_is_a_conflict(http: httpx.Client) -> None:
    assert http.post("/api/cards", json={"card_id": "D-1", "title": "x"}).status_code == 201
    res = http.post("/api/cards", json={"card_id": "D-1", "title": "x"})
    assert res.status_code == 409 and "already exists" in res.json()["detail"]


def test_post_card_with_invalid_json_is_422(http: httpx.Client) -> None:
    res = http.post("/api/cards", content=b"{not json", headers={"content-type": "application/json"})
    assert res.status_code == 422


def test_list_cards_filters_and_pages(http: httpx.Client, store: CardStore) -> None:
    # Given
    for i in range(5):
        add(store, f"L-{i}", squad="backend" if i % 2 else "frontend", priority=i)
    seed(store, "L-done", Status.DONE, squad="backend", priority=0)

    # Expect priority order, filters and pages
    assert [c["card_id"] for c in http.get("/api/cards").json()] == ["L-4", "L-3", "L-2", "L-1", "L-0", "L-done"]
    assert [c["card_id"] for c in http.get("/api/cards", params={"squad": "backend"}).json()] == \
        ["L-3", "L-1", "L-done"]
    assert [c["card_id"] for c in http.get("/api/cards", params={"status": "DONE"}).json()] == ["L-done"]
    assert [c["card_id"] for c in http.get("/api/cards", params={"limit": 2, "offset": 1}).json()] == ["L-3", "L-2"]
    assert http.get("/api/cards", params={"offset": 1000000}).json() == []


@pytest.mark.parametrize("query", ["limit=-1", "limit=0", "limit=abc", "offset=-5", "offset=99999999999999999999",
                                   "status=NOPE", "limit=1e3", "squad=%00"])
def test_list_cards_rejects_bad_query_with_422(http: httpx.Client, query: str) -> None:
    for path in ("/api/cards", "/api/cards/enhanced"):
        res = http.get(f"{path}?{query}")
        assert res.status_code == 422, (path, query, res.text)
        assert res.json()["problems"]


def test_card_detail_runs_and_run_log(http: httpx.Client, store: CardStore) -> None:
    # Given a card that failed once and is waiting to retry
    seed(store, "R-1", Status.RETRYING, error="rate limited")

    # When
    detail = http.get("/api/cards/R-1").json()
    runs = http.get("/api/cards/R-1/runs").json()
    log = http.get(f"/api/runs/{runs[0]['id']}/log").json()

    # Expect
    assert detail["status"] == "RETRYING" and detail["last_error"] == "rate limited"
    assert [r["attempt"] for r in detail["runs"]] == [1] and runs == detail["runs"]
    assert runs[0]["status"] == "failed" and runs[0]["error"] == "rate limited" and runs[0]["log_available"]
    assert log["card_id"] == "R-1" and "ERROR bad" in log["log"]


@pytest.mark.parametrize("path", ["/api/cards/NOPE", "/api/cards/NOPE/runs", "/api/cards/..%2F..", "/api/runs/999/log",
                                  "/api/tasks/NOPE/logs", "/api/cards/%20x"])
def test_unknown_ids_are_404(http: httpx.Client, path: str) -> None:
    res = http.get(path)
    assert res.status_code == 404, res.text
    assert res.json()["detail"]


@pytest.mark.parametrize("path", ["/api/runs/abc/log", "/api/runs/0/log", "/api/runs/-1/log",
                                  "/api/runs/99999999999999999999999/log", "/api/runs/1.5/log"])
def test_bad_run_ids_are_422_never_500(http: httpx.Client, path: str) -> None:
    assert http.get(path).status_code == 422


# ---- enhanced ---------------------------------------------------------------------------------
def test_enhanced_maps_every_store_status_to_a_celery_task_status(
        http: httpx.Client, store: CardStore, redis_server: RedisServer) -> None:
    # Given one card in each status, reached through the store's own transitions
    tasks = {
        "E-done": seed(store, "E-done", Status.DONE),
        "E-failed": seed(store, "E-failed", Status.FAILED, error="exit code 3"),
        "E-retrying": seed(store, "E-retrying", Status.RETRYING, error="rate limit"),
        "E-cancelled": seed(store, "E-cancelled", Status.CANCELLED),
        "E-queued": seed(store, "E-queued", Status.QUEUED),
        "E-started": seed(store, "E-started", Status.IN_PROGRESS),
        "E-progress": seed(store, "E-progress", Status.IN_PROGRESS, progress=55),
        "E-todo": seed(store, "E-todo", Status.TODO),
    }
    # ... a Celery result for the done card, and a live log for the running one
    results = redis_server.client(1)
    results.set(CELERY_META_PREFIX + str(tasks["E-done"]), json.dumps(
        {"status": "SUCCESS", "result": {"card_id": "E-done", "status": "DONE"}, "traceback": None}))
    EventBus(redis_server.url + "/2", store.redis_keys).append_logs("E-progress", tasks["E-progress"],
                                                  [("2026-01-01T00:00:00Z", "INFO", "working")])

    # When
    cards = by_id(http.get("/api/cards/enhanced").json())

    # Expect
    expected = {"E-done": "SUCCESS", "E-failed": "FAILURE", "E-retrying": "RETRY", "E-cancelled": "REVOKED",
                "E-queued": "PENDING", "E-started": "STARTED", "E-progress": "PROGRESS"}
    assert {cid: cards[cid]["celery_task"]["status"] for cid in expected} == expected
    assert cards["E-todo"]["celery_task"] is None and cards["E-todo"]["logs_available"] is False
    for cid in expected:
        assert set(cards[cid]["celery_task"]) == TASK_KEYS
        assert set(cards[cid]) == CARD_KEYS | ENHANCED_EXTRAS
        assert cards[cid]["celery_task"]["task_id"] == tasks[cid]
    done, failed, running = cards["E-done"]["celery_task"], cards["E-failed"]["celery_task"], \
        cards["E-progress"]["celery_task"]
    assert done["result"] == {"card_id": "E-done", "status": "DONE"} and done["progress"] == 100
    assert failed["traceback"] == "exit code 3" and failed["max_retries"] == 3 and failed["retries"] == 0
    assert running["progress"] == 55 and running["worker"] == "w1@test" and running["eta"] is not None
    assert cards["E-progress"]["logs_available"] is True  # live stream
    assert cards["E-done"]["logs_available"] is True  # archived log
    assert cards["E-queued"]["logs_available"] is False


def test_statuses_lists_every_status_with_its_facts_in_lane_order(http: httpx.Client) -> None:
    # When
    res = http.get("/api/statuses")
    # Expect the store's table, as the dashboard draws its lanes and buttons from it
    assert res.status_code == 200
    rows = res.json()
    assert [r["status"] for r in rows] == [s.value for s in STATUS_FACTS]
    by_status = {r["status"]: r for r in rows}
    assert by_status["FAILED"]["retryable"] and by_status["FAILED"]["final"]
    assert by_status["IN_PROGRESS"]["running"] and by_status["IN_PROGRESS"]["cancellable"]
    assert by_status["QUEUED"]["celery_state"] == "PENDING" and by_status["TODO"]["celery_state"] is None
    assert sorted(by_status["REVIEW"]["next"]) == ["CANCELLED", "DONE", "LANDING", "QUEUED"]
    assert by_status["NEEDS_INPUT"]["running"] and not by_status["WAITING"]["running"]


def test_enhanced_retries_restart_from_zero_after_a_user_s_retry(http: httpx.Client, store: CardStore) -> None:
    # Given A failed after two attempts, then retried by the user (a fresh budget) and running again
    seed(store, "A", Status.RETRYING)
    assert store.enqueue("A", "t-2", expected=[Status.RETRYING])
    second = store.claim("A", "t-2", "w1@test", 30)
    assert second is not None
    assert store.finish(second, RunOutcome(succeeded=False, error="boom"), RetryPolicy.fixed(0)) == Status.FAILED
    assert store.enqueue("A", "t-3", expected=[Status.FAILED], fresh_retries=True)
    assert store.claim("A", "t-3", "w1@test", 30) is not None
    # When the enhanced list is read
    task = by_id(http.get("/api/cards/enhanced").json())["A"]["celery_task"]
    # Expect no automatic retry counted yet: attempts before the user's retry are not retries
    assert (task["retries"], task["max_retries"]) == (0, 3)


def test_enhanced_works_without_redis(sqlite_url: str) -> None:
    settings = load_settings(redis_url=f"redis://127.0.0.1:{free_port()}", database_url=sqlite_url)
    with run_api(settings) as api, api.client() as http:
        seed(api.state.store, "NR-1", Status.FAILED)
        res = http.get("/api/cards/enhanced")
    assert res.status_code == 200
    assert res.json()[0]["celery_task"]["status"] == "FAILURE"


def _commandstats(client: Any) -> dict[str, int]:
    info = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in info.items()}


def test_enhanced_page_of_100_costs_three_queries_and_two_redis_round_trips(
        db_url: str, redis_url: str, redis_server: RedisServer) -> None:
    # Given 150 cards (100 on the page), half of them with a task, a Celery result and a live log
    settings = load_settings(redis_url=redis_url, database_url=db_url)
    with run_api(settings) as api, api.client() as http:
        store = api.state.store
        store.add_cards([parse_card({"card_id": f"Q-{i:03d}", "title": "q"}) for i in range(150)])
        bus = EventBus(settings.events, store.redis_keys)
        for i in range(0, 150, 2):
            task_id = seed_task(store, f"Q-{i:03d}")
            redis_server.client(1).set(CELERY_META_PREFIX + task_id, json.dumps({"status": "STARTED"}))
            bus.append_logs(f"Q-{i:03d}", task_id, [("2026-01-01T00:00:00Z", "INFO", "x")])
        assert len(http.get("/api/cards/enhanced", params={"limit": 100}).json()) == 100  # warm pools

        statements: list[str] = []

        def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if statement.split()[0].upper() not in ("BEGIN", "COMMIT", "ROLLBACK", "SELECT 1"):
                statements.append(statement)

        admin = redis_server.client()
        event.listen(store.engine, "before_cursor_execute", count)
        try:
            before = _commandstats(admin)
            reads_before = int(admin.info("stats")["total_reads_processed"])
            # When
            res = http.get("/api/cards/enhanced", params={"limit": 100})
            reads = int(admin.info("stats")["total_reads_processed"]) - reads_before
            after = _commandstats(admin)
        finally:
            event.remove(store.engine, "before_cursor_execute", count)

    # Expect one query for the page (with the board's extras), one for the last runs, one count
    cards = res.json()
    assert len(cards) == 100 and sum(c["celery_task"] is not None for c in cards) == 50
    assert len(statements) == 3, statements
    assert res.headers["X-Total-Count"] == "150"
    assert sum(c["last_output_at"] is not None for c in cards) == 50
    # ... one MGET for the task states and one script call checking the 100 live logs, nothing per card
    calls = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    calls = {k: v for k, v in calls.items() if v and k not in ("info", "xread", "xrevrange", "ping")}
    assert calls.pop("mget") == 1
    assert calls.pop("evalsha") == 1
    assert calls.pop("exists", 0) <= 100  # inside the script, if the server counts those
    assert sum(calls.values()) <= 2, calls  # e.g. CLIENT SETINFO of a fresh connection
    # ... sent as a handful of network reads, not one per card
    assert reads <= 8, reads


def seed_task(store: CardStore, card_id: str) -> str:
    task_id = str(uuid.uuid4())
    assert store.enqueue(card_id, task_id, expected=[Status.TODO])
    assert store.claim(card_id, task_id, "w@test", 30) is not None
    return task_id


# ---- task logs --------------------------------------------------------------------------------
def test_task_logs_from_the_live_stream_with_limit_and_after(http: httpx.Client, store: CardStore,
                                                            settings: Settings) -> None:
    # Given a running card with 5 live log lines
    task_id = seed(store, "G-1", Status.IN_PROGRESS)
    EventBus(settings.events, store.redis_keys).append_logs("G-1", task_id,
                                                        [(f"t{i}", "INFO", f"line {i}") for i in range(5)])

    # When / Expect: the last `limit` lines, oldest first
    last = http.get("/api/tasks/G-1/logs", params={"limit": 2}).json()
    assert [e["message"] for e in last] == ["line 3", "line 4"]
    assert set(last[0]) == {"id", "timestamp", "level", "message", "task_id"} and last[0]["task_id"] == task_id
    every = http.get("/api/tasks/G-1/logs").json()
    assert len(every) == 5
    # ... and polling with `after`
    after = http.get("/api/tasks/G-1/logs", params={"after": every[1]["id"], "limit": 2}).json()
    assert [e["message"] for e in after] == ["line 2", "line 3"]
    assert http.get("/api/tasks/G-1/logs", params={"after": every[-1]["id"]}).json() == []


def test_task_logs_fall_back_to_the_archive_when_the_stream_expired(http: httpx.Client, store: CardStore) -> None:
    # Given a finished card whose live log is gone (never written here: it expired)
    seed(store, "G-2", Status.DONE)

    # When
    entries = http.get("/api/tasks/G-2/logs").json()

    # Expect the archived lines, parsed
    assert [(e["level"], e["message"]) for e in entries] == [("INFO", "hello"), ("ERROR", "bad")]
    assert [e["message"] for e in http.get("/api/tasks/G-2/logs", params={"after": entries[0]["id"]}).json()] \
        == ["bad"]
    assert http.get("/api/tasks/G-2/logs", params={"limit": 1}).json()[0]["message"] == "bad"


@pytest.mark.parametrize("query", ["after=abc", "after=1-2-3", "limit=0", "limit=100001",
                                   "after=99999999999999999999-0"])
def test_task_logs_reject_bad_query_with_422(http: httpx.Client, store: CardStore, query: str) -> None:
    add(store, "G-3")
    assert http.get(f"/api/tasks/G-3/logs?{query}").status_code == 422


# ---- retry and cancel -------------------------------------------------------------------------
def test_retry_a_failed_card_queues_a_new_task(http: httpx.Client, store: CardStore,
                                               redis_server: RedisServer) -> None:
    old = seed(store, "T-1", Status.FAILED)

    res = http.post("/api/tasks/T-1/retry", json={"force": False})

    assert res.status_code == 200, res.text
    body = res.json()
    assert set(body) == {"status", "card_id", "old_task_id", "new_task_id", "message"}
    assert body["old_task_id"] == old and body["new_task_id"] not in (None, old)
    card = store.get_card("T-1")
    assert (card.status, card.celery_task_id) == (Status.QUEUED, body["new_task_id"])
    broker = redis_server.client(0)
    assert any(broker.llen(k) for k in broker.keys("cards*")), "no message in the broker"


def test_retry_rules_404_and_400(http: httpx.Client, store: CardStore) -> None:
    add(store, "T-todo")
    seed(store, "T-done", Status.DONE)
    assert http.post("/api/tasks/NOPE/retry").status_code == 404
    assert http.post("/api/tasks/T-todo/retry").status_code == 404  # no task yet
    res = http.post("/api/tasks/T-done/retry", json={"force": False})
    assert res.status_code == 400 and "force" in res.json()["detail"]
    assert http.post("/api/tasks/T-done/retry", json={"force": "maybe"}).status_code == 422
    assert http.post("/api/tasks/T-done/retry", json={"force": True}).status_code == 200
    assert store.get_card("T-done").status == Status.QUEUED


def test_cancel_a_queued_card_and_not_a_done_one(http: httpx.Client, store: CardStore) -> None:
    task_id = seed(store, "C-1", Status.QUEUED)
    seed(store, "C-2", Status.DONE)

    res = http.post("/api/tasks/C-1/cancel")

    assert res.status_code == 200, res.text
    assert res.json()["card"]["status"] == "CANCELLED" and res.json()["task_id"] == task_id
    assert store.get_card("C-1").status == Status.CANCELLED
    assert http.post("/api/tasks/C-2/cancel").status_code == 400
    assert http.post("/api/tasks/NOPE/cancel").status_code == 404


# ---- workers and metrics ----------------------------------------------------------------------
def test_workers_without_any_worker(http: httpx.Client) -> None:
    body = http.get("/api/workers").json()
    assert body["status"] == "no_workers" and body["workers"] == []


def test_metrics_from_runs_of_the_last_hour(http: httpx.Client, store: CardStore) -> None:
    # Given 4 succeeded runs and 1 failed one with known queue waits and run times
    for i in range(4):
        seed(store, f"MX-{i}", Status.DONE)
    seed(store, "MX-f", Status.FAILED)
    now = time.time()
    with store.tx() as conn:
        for n, run_id in enumerate(sorted(r.id for c in ("MX-0", "MX-1", "MX-2", "MX-3", "MX-f")
                                          for r in store.list_runs(c)), start=1):
            conn.execute(update(runs_t).where(runs_t.c.id == run_id).values(
                queued_at=now - 100 - n, started_at=now - 100, ended_at=now - 100 + 10 * n,
                input_tokens=100 * n, output_tokens=n, cache_read_tokens=50 * n, cache_creation_tokens=10 * n))

    # When
    m = http.get("/api/metrics").json()
    text = http.get("/metrics")

    # Expect
    assert (m["runs_finished"], m["runs_succeeded"], m["runs_failed"]) == (5, 4, 1)
    assert m["error_rate"] == 0.2
    assert m["run_time_s"] == {"p50": 30.0, "p95": 48.0, "count": 5}
    assert m["queue_wait_s"]["p50"] == 3.0
    assert m["counts_by_status"]["DONE"] == 4 and m["counts_by_status"]["FAILED"] == 1
    assert m["total_cost_usd"] == 1.25
    assert sum(b["succeeded"] for b in m["throughput"]) == 4 and m["throughput_per_minute"] == round(5 / 60, 3)
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text.text) for s in fam.samples}
    assert samples[("squad_cards_total", (("status", "DONE"),))] == 4
    assert samples[("squad_runs_total", (("outcome", "succeeded"),))] == 4
    assert samples[("squad_runs_total", (("outcome", "failed"),))] == 1
    assert samples[("squad_run_duration_seconds_count", ())] == 5
    assert samples[("squad_run_duration_seconds_bucket", (("le", "30.0"),))] == 3
    assert samples[("squad_active_websockets", ())] == 0
    assert samples[("squad_queue_length", ())] == 0
    assert samples[("squad_workers_online", ())] >= 0
    assert samples[("squad_cost_usd_total", ())] == 1.25
    assert {kind: samples[("squad_tokens_total", (("kind", kind),))]
            for kind in ("input", "output", "cache_read", "cache_creation")} == {
        "input": 1500, "output": 15, "cache_read": 750, "cache_creation": 150}
    # ... and each run object carries the prompt-cache split of its input tokens
    run = http.get("/api/cards/MX-0/runs").json()[0]
    assert run["cache_read_tokens"] == run["input_tokens"] // 2
    assert run["cache_creation_tokens"] == run["output_tokens"] * 10


# ---- auth, CORS, serving ----------------------------------------------------------------------
def test_token_protects_every_post_and_api_reads_but_not_health(redis_url: str, sqlite_url: str) -> None:
    settings = load_settings(redis_url=redis_url, database_url=sqlite_url, api_token="s3cret")
    with run_api(settings) as api, api.client() as http:
        seed(api.state.store, "A-1", Status.FAILED)
        body = {"card_id": "A-2", "title": "x"}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"},
                        {"Authorization": "Bearer s3cret2"}):
            assert http.post("/api/cards", json=body, headers=headers).status_code == 401
            assert http.post("/api/tasks/A-1/retry", headers=headers).status_code == 401
            assert http.post("/api/tasks/A-1/cancel", headers=headers).status_code == 401
        assert api.state.store.get_card("A-1").status == Status.FAILED
        assert http.get("/api/cards").status_code == 401 and http.get("/health").status_code == 200
        good = {"Authorization": "Bearer s3cret"}
        assert http.post("/api/cards", json=body, headers=good).status_code == 201
        assert http.post("/api/tasks/A-1/cancel", headers=good).status_code == 200


def test_cors_is_off_by_default_and_on_for_configured_origins(redis_url: str, sqlite_url: str) -> None:
    origin = {"Origin": "http://dash.example"}
    with run_api(load_settings(redis_url=redis_url, database_url=sqlite_url)) as api, api.client() as http:
        assert "access-control-allow-origin" not in http.get("/api/cards", headers=origin).headers
    settings = load_settings(redis_url=redis_url, database_url=sqlite_url, cors_origins=["http://dash.example"])
    with run_api(settings) as api, api.client() as http:
        assert http.get("/api/cards", headers=origin).headers["access-control-allow-origin"] == "http://dash.example"
        other = http.get("/api/cards", headers={"Origin": "http://evil.example"}).headers
        assert "access-control-allow-origin" not in other


def test_every_dashboard_file_is_served_under_static_with_its_type(http: httpx.Client) -> None:
    # A module script served with another type than JavaScript is refused by the browser
    types = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
    files = sorted(p for p in WEB_DIR.iterdir() if p.is_file() and p.suffix in types)
    assert {p.suffix for p in files} == set(types)
    for path in files:
        res = http.get(f"/static/{path.name}")
        assert res.status_code == 200, path.name
        assert res.headers["content-type"].split(";")[0] == types[path.suffix], path.name
        assert res.content == path.read_bytes()


def test_root_serves_a_page_and_docs_describe_every_route(http: httpx.Client) -> None:
    assert http.get("/").headers["content-type"].startswith("text/html")
    assert http.get("/docs").status_code == 200
    paths = http.get("/openapi.json").json()["paths"]
    for path in ("/health", "/api/cards", "/api/cards/enhanced", "/api/cards/{card_id}", "/api/cards/{card_id}/runs",
                 "/api/runs/{run_id}/log", "/api/tasks/{card_id}/logs", "/api/tasks/{card_id}/retry",
                 "/api/tasks/{card_id}/cancel", "/api/workers", "/api/metrics", "/metrics"):
        assert path in paths, path
        for op in paths[path].values():
            assert "200" in op["responses"] or "201" in op["responses"]


def test_wrong_method_is_405_listing_every_method_of_the_path(http: httpx.Client) -> None:
    res = http.request("DELETE", "/api/cards")
    assert res.status_code == 405 and res.headers["allow"] == "GET, POST"
    assert http.request("PUT", "/api/cards/X").headers["allow"] == "GET"


def test_serve_refuses_a_public_host_without_a_token(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="SQUAD_API_TOKEN"):
        serve(settings, host="0.0.0.0", port=free_port())


def test_squad_serve_cli_refuses_public_host_then_serves_on_loopback_and_stops_on_sigterm(
        redis_url: str, sqlite_url: str) -> None:
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url)
    refused = subprocess.run([sys.executable, "-m", "squad", "serve", "--host", "0.0.0.0", "--port",
                              str(free_port())], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2 and "SQUAD_API_TOKEN" in refused.stderr
    assert "Traceback" not in refused.stderr

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "squad", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: api_answers(f"http://127.0.0.1:{port}"), 60, message="squad serve answering")
        os.kill(proc.pid, signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
        # uvicorn shuts down gracefully, then re-raises the signal it caught: exit 143 like every command
        assert proc.returncode == 143, err
        assert "Application shutdown complete" in err and "Traceback" not in err
        # ... having said where it serves, in one human line
        assert f"squad serve: dashboard and API at http://127.0.0.1:{port}/" in err, err
    finally:
        if proc.poll() is None:
            kill_tree(proc)


def test_land_route_answers_404_for_an_unknown_card_and_409_with_a_reason_for_a_card_not_done(
        http: httpx.Client, store: CardStore) -> None:
    # Given a TODO card and a DONE card without a workspace
    add(store, "L-TODO")
    seed(store, "L-DONE", Status.DONE)
    # Expect 404 for an unknown card, 409 with the reason for the others, and no status changed
    assert http.post("/api/cards/NOPE/land").status_code == 404
    res = http.post("/api/cards/L-TODO/land")
    assert res.status_code == 409 and "only a DONE or REVIEW card can land" in res.text, res.text
    res = http.post("/api/cards/L-DONE/land")
    assert res.status_code == 409 and "has no workspace" in res.text, res.text
    assert (status_of(store, "L-TODO"), status_of(store, "L-DONE")) == (Status.TODO, Status.DONE)


def test_card_objects_carry_their_last_runs_landed_commit_in_the_api_and_the_cli(
        http: httpx.Client, store: CardStore, redis_url: str, sqlite_url: str) -> None:
    # Given a card that landed, one still LANDING (verify passed, no landing yet) and one never run
    landed = "0123456789abcdef0123456789abcdef01234567"
    seed_verified(store, "LC-LANDED", verify_exit=0, verify_output="ok", land=True, landed_commit=landed)
    seed_verified(store, "LC-WAIT", verify_exit=0, verify_output="ok", land=True)
    add(store, "LC-TODO")
    expected = {"LC-LANDED": landed, "LC-WAIT": None, "LC-TODO": None}
    # Expect every card object of the API to carry it: the list, one card
    assert {c["card_id"]: c["landed_commit"] for c in http.get("/api/cards").json()} == expected
    for card_id, commit in expected.items():
        assert http.get(f"/api/cards/{card_id}").json()["landed_commit"] == commit
    # ... and of the CLI: `card list --json`, `card show --json`
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url)
    listed = run_cli("card", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert {c["card_id"]: c["landed_commit"] for c in json.loads(listed.stdout)} == expected
    shown = run_cli("card", "show", "LC-LANDED", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    card = json.loads(shown.stdout)
    assert card["landed_commit"] == landed and card["runs"][-1]["landed_commit"] == landed
