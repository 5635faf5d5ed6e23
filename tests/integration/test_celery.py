"""Distributed execution against a real redis-server, real `squad worker` processes and real agents.

No eager mode, no mocks: cards go through the Redis broker to supervised Celery workers, agents
are real subprocesses, and the outcome is read from the SQL store and the Redis streams.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from squad.core.cards import Run, parse_card
from squad.core.constants import (
    EXECUTE_TASK_NAME,
    KOMBU_UNACKED_KEY,
    RECONCILE_TASK_NAME,
)
from squad.core.settings import Settings, load_settings
from squad.core.statuses import Status
from squad.live.broker import BrokerView, queue_keys
from squad.live.celery_config import make_celery
from squad.live.connections import stream_key
from squad.live.events import decode_event
from squad.orchestration.dispatch import CeleryDispatcher
from squad.orchestration.orchestrator import Orchestrator
from squad.store.card_store import CardStore
from support.api import run_api
from support.cli import squad_env
from support.fake_agents import sandbox_toml
from support.paths import AGENTS
from support.processes import alive, free_port, kill_tree, read_pid, wait_for
from support.redis_server import RedisServer
from support.store import status_of
from support.workers import Worker

PY = sys.executable
Cli = Callable[..., subprocess.CompletedProcess[str]]
StartWorker = Callable[..., Worker]
FIXED_STEPS = {0, 10, 15, 20, 25, 30, 100}


# ---- helpers ----------------------------------------------------------------------------------
@pytest.fixture
def env(redis_url: str, sqlite_url: str) -> dict[str, str]:
    """Subprocess environment: our Redis and store, short agents, backoffs and leases."""
    return squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url, SQUAD_DEMO_DURATION="0.5",
                     SQUAD_RETRY_BACKOFF="1", SQUAD_LEASE_S="3")


@pytest.fixture
def settings(redis_url: str, sqlite_url: str) -> Settings:
    """The same settings, for the test process itself."""
    return load_settings(redis_url=redis_url, database_url=sqlite_url, retry_backoff=1, lease_s=3)


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    """The shared `store` fixture on SQLite only here (the workers are given `sqlite_url`)."""
    return sqlite_url


def write_agents(tmp_path: Path, body: str, sandbox: str | None = None) -> None:
    """A squad.toml in the test's working directory (workers and CLI calls read it from there); the
    agents may write there in their sandbox, unless `sandbox` is a `[sandbox]` table of its own."""
    (tmp_path / "squad.toml").write_text((sandbox or sandbox_toml(tmp_path)) + body, encoding="utf-8")


def agent_toml(name: str, command: list[str], **env: str) -> str:
    lines = [f"[agents.{name}]", f"command = {json.dumps(command)}", 'parser = "markers"']
    if env:
        lines.append("env = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in env.items()) + " }")
    return "\n".join(lines) + "\n"


def import_cards(cli: Cli, env: dict[str, str], tmp_path: Path, cards: list[dict[str, Any]]) -> None:
    path = tmp_path / f"backlog-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps({"cards": cards}), encoding="utf-8")
    res = cli("backlog", "import", str(path), env=env)
    assert res.returncode == 0, res.stderr


def add_card(store: CardStore, card_id: str, **fields: Any) -> None:
    store.add_cards([parse_card({"card_id": card_id, "title": f"card {card_id}", **fields})])


def events_of(redis_server: RedisServer, card_id: str, event_type: str) -> list[dict[str, Any]]:
    """Events of one card and type from `task_updates` (DB 2), in stream order (an `added` event
    counts for each card it names)."""
    client = redis_server.client(2)
    streams = client.keys("squad:*:task_updates")  # one store in these tests: one namespace
    assert len(streams) <= 1, streams
    entries = client.xrange(streams[0]) if streams else []
    events = [decode_event(eid, fields) for eid, fields in entries]
    return [e for e in events if e["type"] == event_type
            and (e["card_id"] == card_id or card_id in e.get("card_ids", []))]


def statuses_of(redis_server: RedisServer, card_id: str) -> list[str]:
    """The card's statuses as the events tell them: its `status` events, and TODO for an `added`
    event naming it (cards imported together)."""
    events = events_of(redis_server, card_id, "status") + events_of(redis_server, card_id, "added")
    return [e["status"] for e in sorted(events, key=lambda e: stream_key(e["id"]))]


def statuses_ending(redis_server: RedisServer, card_id: str, final: str) -> list[str]:
    """The card's status events once its final one is in the stream: the worker publishes it just
    after its commit, so a test that saw the store settle can be a moment ahead of the stream."""
    wait_for(lambda: statuses_of(redis_server, card_id)[-1:] == [final], timeout=30,
             message=f"{card_id}'s {final} status event")
    return statuses_of(redis_server, card_id)


def runs_of(store: CardStore, card_id: str) -> list[Run]:
    return store.list_runs(card_id)


def settled(store: CardStore, card_ids: list[str], status: Status = Status.DONE) -> bool:
    cards = store.get_cards(card_ids)
    return all(cards[c].status == status for c in card_ids)


def agent_pid(script: str, marker: str) -> int:
    """The pid of the agent running `script` with `marker` in its argv."""
    def find() -> int | None:
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmd = proc.info["cmdline"] or []
            if any(part.endswith(script) for part in cmd) and any(marker in part for part in cmd):
                return int(proc.info["pid"])
        return None

    pid = wait_for(find, 30, message=f"agent {script} {marker}")
    assert isinstance(pid, int)
    return pid


def broker_idle(redis_server: RedisServer) -> bool:
    """No card message waiting in `cards` and none delivered-but-unacked.

    Only card messages count: with `squad beat` running, a reconciler task of its own may be
    delivered and not yet acked at any moment, and says nothing about the cards."""
    broker = redis_server.client(0)
    unacked = broker.hvals(KOMBU_UNACKED_KEY)
    card_messages = [raw for raw in unacked
                     if json.loads(raw)[0].get("headers", {}).get("task") == EXECUTE_TASK_NAME]
    return sum(broker.llen(k) for k in queue_keys()) == 0 and not card_messages


def orchestrate(cli: Cli, env: dict[str, str], *args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return cli("orchestrate", "--interval", "0.2", *args, env=env, timeout=timeout)


def start_orchestrate(spawn: Any, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """`squad orchestrate` in the background, ended after the test whatever its outcome."""
    proc: subprocess.Popen[str] = spawn("orchestrate", "--interval", "0.2", *args, env=env,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc


def watch_statuses(store: CardStore, card_id: str, proc: subprocess.Popen[str],
                   timeout: float = 120) -> list[tuple[str, int, int]]:
    """Poll the store until `proc` ends: every distinct (status, runs, open runs) seen."""
    seen: list[tuple[str, int, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ended = proc.poll() is not None
        status = status_of(store, card_id).value  # status first: runs read after it are never older
        runs = runs_of(store, card_id)
        state = (status, len(runs), sum(r.ended_at is None for r in runs))
        if not seen or seen[-1] != state:
            seen.append(state)
        if ended:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        kill_tree(proc)
        raise AssertionError(f"orchestrate did not end; statuses seen: {seen}")
    return seen


# ---- happy path -------------------------------------------------------------------------------
def test_cards_run_on_workers_with_ordered_progress_status_events_and_logs(
        cli: Cli, env: dict[str, str], tmp_path: Path, start_worker: StartWorker, store: CardStore,
        redis_server: RedisServer) -> None:
    # Given three demo cards imported from a backlog file and a real worker
    ids = ["HAPPY-1", "HAPPY-2", "HAPPY-3"]
    import_cards(cli, env, tmp_path, [{"card_id": c, "title": f"do {c}", "agent": "demo"} for c in ids])
    worker = start_worker(env, concurrency=2)

    # When the orchestrator sends them through the broker and waits
    res = orchestrate(cli, env, "--once", "--wait", "--mode", "celery")

    # Expect every card DONE after exactly one run on our worker
    assert res.returncode == 0, res.stderr
    for card_id in ids:
        card = store.get_card(card_id)
        assert (card.status, card.attempts, card.progress) == (Status.DONE, 1, 100)
        runs = runs_of(store, card_id)
        assert len(runs) == 1
        assert (runs[0].status, runs[0].exit_code, runs[0].worker) == ("succeeded", 0, worker.hostname)
        assert runs[0].task_id == card.celery_task_id

    # Expect progress events in non-decreasing order, with every fixed step
    for card_id in ids:
        progress = [e["progress"] for e in events_of(redis_server, card_id, "progress")]
        assert progress == sorted(progress), progress
        assert set(progress) >= FIXED_STEPS, progress
        assert any(35 <= p <= 95 for p in progress), "the agent's own ::progress markers are missing"
        # (TODO is the import's `added` event naming the new cards)
        assert statuses_ending(redis_server, card_id, "DONE") == ["TODO", "QUEUED", "IN_PROGRESS", "DONE"]
        # the final status follows every line and progress event of its attempt (its last batch
        # leaves in one pipeline with it, after finish)
        final = events_of(redis_server, card_id, "status")[-1]
        later = [e for kind in ("progress", "log") for e in events_of(redis_server, card_id, kind)
                 if stream_key(e["id"]) > stream_key(final["id"])]
        assert final["status"] == "DONE" and later == [], later
        assert events_of(redis_server, card_id, "log")[-1]["message"] == "attempt succeeded"
        event = events_of(redis_server, card_id, "progress")[-1]
        assert {"task_id", "timestamp", "current_step", "elapsed", "worker"} <= set(event)

    # Expect the live log in Redis with a TTL, and the archived log in the store
    events_db = redis_server.client(2)
    key = store.redis_keys.task_logs("HAPPY-1")
    entries = events_db.xrange(key)
    assert any("demo agent: card HAPPY-1" in fields["message"] for _id, fields in entries)
    assert {"timestamp", "level", "message", "task_id"} <= set(entries[0][1])
    assert any(fields["level"] == "STDERR" for _id, fields in entries), "stderr lines must be STDERR"
    assert 0 < events_db.ttl(key) <= 86400

    shown = cli("card", "show", "HAPPY-1", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    card_json = json.loads(shown.stdout)
    assert card_json["status"] == "DONE"
    assert [(r["attempt"], r["status"], r["log_available"]) for r in card_json["runs"]] == [(1, "succeeded", True)]

    archived = cli("logs", "HAPPY-1", "--run", "1", env=env)
    assert archived.returncode == 0, archived.stderr
    assert "attempt 1 (succeeded)" in archived.stdout
    assert "demo agent: card HAPPY-1" in archived.stdout
    assert "done: updated SQUAD_DEMO.md" in archived.stdout


def test_a_card_done_on_a_worker_releases_its_dependant_at_once_not_at_the_next_poll(
        cli: Cli, env: dict[str, str], tmp_path: Path, start_worker: StartWorker, store: CardStore) -> None:
    # Given a chain A <- B <- C, a worker, and an orchestrator whose safety-net poll never comes
    import_cards(cli, env, tmp_path, [{"card_id": "CH-A", "title": "a", "agent": "demo"},
                                      {"card_id": "CH-B", "title": "b", "agent": "demo", "depends_on": ["CH-A"]},
                                      {"card_id": "CH-C", "title": "c", "agent": "demo", "depends_on": ["CH-B"]}])
    start_worker(env, concurrency=1)
    # When
    res = cli("orchestrate", "--interval", "3600", "--once", "--wait", "--mode", "celery", env=env, timeout=150)
    # Expect every card DONE: the worker's status event woke the orchestrator each time
    assert res.returncode == 0, res.stderr
    assert [store.get_card(c).status for c in ("CH-A", "CH-B", "CH-C")] == [Status.DONE] * 3


# ---- retries ----------------------------------------------------------------------------------
def test_failed_first_attempt_is_retried_after_backoff_and_shown_retrying(
        cli: Cli, env: dict[str, str], tmp_path: Path, start_worker: StartWorker, store: CardStore,
        redis_server: RedisServer, spawn: Any) -> None:
    # Given a card whose agent fails its first attempt only, and a 1 s backoff
    import_cards(cli, env, tmp_path, [{"card_id": "FLAKY", "title": "flaky", "agent": "demo-flaky"}])
    start_worker(env, concurrency=1)

    # When the orchestrator runs it to the end
    proc = start_orchestrate(spawn, env, "--once", "--wait", "--mode", "celery")
    seen = watch_statuses(store, "FLAKY", proc)

    # Expect RETRYING between the attempts, then DONE with two runs
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert ("RETRYING", 1, 0) in seen, seen
    assert statuses_ending(redis_server, "FLAKY", "DONE") == ["TODO", "QUEUED", "IN_PROGRESS", "RETRYING",
                                                         "QUEUED", "IN_PROGRESS", "DONE"]
    runs = runs_of(store, "FLAKY")
    assert [(r.attempt, r.status, r.exit_code) for r in runs] == [(1, "failed", 1), (2, "succeeded", 0)]
    assert runs[0].ended_at is not None and runs[1].started_at is not None
    assert (runs[1].started_at - runs[0].ended_at).total_seconds() >= 1.0, "retry came before its backoff"
    card = store.get_card("FLAKY")
    assert (card.status, card.attempts, card.last_error) == (Status.DONE, 2, None)


def test_always_failing_card_ends_failed_after_max_retries_never_failed_before(
        cli: Cli, env: dict[str, str], tmp_path: Path, start_worker: StartWorker, store: CardStore,
        redis_server: RedisServer, spawn: Any) -> None:
    # Given an agent that always fails and two retries allowed
    env = {**env, "SQUAD_MAX_RETRIES": "2", "SQUAD_RETRY_BACKOFF": "0.3", "SQUAD_DEMO_FAIL": "1"}
    import_cards(cli, env, tmp_path, [{"card_id": "BROKEN", "title": "broken", "agent": "demo"}])
    start_worker(env, concurrency=1)

    # When the orchestrator runs it to the end
    proc = start_orchestrate(spawn, env, "--once", "--wait", "--mode", "celery")
    seen = watch_statuses(store, "BROKEN", proc)

    # Expect FAILED after three runs, exit 1, and FAILED never shown while a retry was pending
    assert proc.returncode == 1, (seen, runs_of(store, "BROKEN"), proc.stderr.read() if proc.stderr else "")
    runs = runs_of(store, "BROKEN")
    assert [(r.attempt, r.status, r.exit_code) for r in runs] == [(1, "failed", 1), (2, "failed", 1),
                                                                  (3, "failed", 1)]
    assert all(state == ("FAILED", 3, 0) for state in seen if state[0] == "FAILED"), seen
    statuses = statuses_ending(redis_server, "BROKEN", "FAILED")
    assert statuses.count("RETRYING") == 2
    assert statuses.count("FAILED") == 1 and statuses[-1] == "FAILED", statuses
    card = store.get_card("BROKEN")
    assert (card.status, card.attempts) == (Status.FAILED, 3)
    assert card.last_error == "exit code 1"


# ---- priority ---------------------------------------------------------------------------------
def test_priority_9_card_overtakes_queued_priority_0_cards_on_a_busy_worker(
        tmp_path: Path, env: dict[str, str], settings: Settings, start_worker: StartWorker,
        store: CardStore) -> None:
    # Given one single-slot worker kept busy by a 4 s card
    write_agents(tmp_path, agent_toml("slow", [PY, "-m", "squad.agents.demo"], SQUAD_DEMO_DURATION="4"))
    settings = load_settings(redis_url=settings.redis_url, database_url=settings.database_url)
    start_worker(env, concurrency=1)
    dispatcher = CeleryDispatcher(settings)
    orch = Orchestrator(settings, store, dispatcher)
    add_card(store, "BUSY", agent="slow")
    orch.tick()
    wait_for(lambda: status_of(store, "BUSY") == Status.IN_PROGRESS, 60, message="BUSY running")

    # When five priority-0 cards are queued, then one priority-9 card
    low = [f"LOW-{i}" for i in range(5)]
    for card_id in low:
        add_card(store, card_id, agent="demo", priority=0)
    assert orch.tick().released == low
    add_card(store, "URGENT", agent="demo", priority=9)
    assert orch.tick().released == ["URGENT"]
    assert status_of(store, "BUSY") == Status.IN_PROGRESS, "the worker must still be busy"
    dispatcher.close()

    # Expect the priority-9 card to start before every queued priority-0 card
    wait_for(lambda: settled(store, ["BUSY", "URGENT", *low]), 120, message="all cards DONE")
    started = {c: runs_of(store, c)[0].started_at for c in ["BUSY", "URGENT", *low]}
    assert all(started["URGENT"] < started[c] for c in low), started
    assert started["BUSY"] < started["URGENT"]


# ---- duplicate and stale messages ---------------------------------------------------------------
def test_duplicate_message_runs_the_card_once_and_stale_message_does_nothing(
        env: dict[str, str], settings: Settings, start_worker: StartWorker, store: CardStore,
        redis_server: RedisServer) -> None:
    # Given a QUEUED card whose message is in the broker twice, plus a message with a stale task id
    add_card(store, "DUP", agent="demo")
    task_id = str(uuid.uuid4())
    stale_id = str(uuid.uuid4())
    assert store.enqueue("DUP", task_id, expected=[Status.TODO])
    app = make_celery(settings)
    try:
        for tid in (task_id, task_id, stale_id):
            app.send_task(EXECUTE_TASK_NAME, args=["DUP"], task_id=tid, queue="cards")
        assert sum(redis_server.client(0).llen(k) for k in queue_keys()) == 3

        # When a worker with two free slots consumes them all
        start_worker({**env, "SQUAD_DEMO_DURATION": "2"}, concurrency=2)
        wait_for(lambda: status_of(store, "DUP") == Status.DONE, 90, message="DUP done")
        wait_for(lambda: broker_idle(redis_server), 60, message="every message consumed")
        stale_result = app.AsyncResult(stale_id).get(timeout=30)
        time.sleep(1.0)

        # Expect exactly one run, by the card's own task id; the stale message claimed nothing
        runs = runs_of(store, "DUP")
        assert [(r.attempt, r.status, r.task_id) for r in runs] == [(1, "succeeded", task_id)]
        assert stale_result == {"card_id": "DUP", "status": None, "claimed": False}

        # And a late duplicate of a finished card does nothing either
        late = app.send_task(EXECUTE_TASK_NAME, args=["DUP"], task_id=task_id, queue="cards")
        assert late.get(timeout=30)["claimed"] is False
        assert len(runs_of(store, "DUP")) == 1
        assert status_of(store, "DUP") == Status.DONE
    finally:
        app.close()


# ---- cancel and retry ---------------------------------------------------------------------------
def test_cancel_ends_agent_tree_without_retry_and_retry_force_restarts_a_running_card(
        cli: Cli, env: dict[str, str], tmp_path: Path, start_worker: StartWorker, store: CardStore,
        reaper: list[int]) -> None:
    # Given a running card whose agent leaves a grandchild that ignores SIGTERM
    script = str(AGENTS / "grandchild.py")
    write_agents(tmp_path, agent_toml("tree", [PY, script, "{workdir}/gc-{attempt}.pid", "sleep"]))
    workdir = tmp_path / "work" / "TREE"
    import_cards(cli, env, tmp_path, [{"card_id": "TREE", "title": "tree", "agent": "tree"}])
    start_worker(env, concurrency=2)
    assert orchestrate(cli, env, "--once", "--mode", "celery").returncode == 0

    def running_attempt(attempt: int) -> tuple[int, int]:
        grandchild = read_pid(workdir / f"gc-{attempt}.pid")
        agent = agent_pid("grandchild.py", f"gc-{attempt}.pid")
        reaper.extend([grandchild, agent])
        wait_for(lambda: status_of(store, "TREE") == Status.IN_PROGRESS, 30, message="TREE running")
        return agent, grandchild

    first = running_attempt(1)

    # When the card is cancelled
    res = cli("cancel", "TREE", env=env)

    # Expect CANCELLED, the agent and its grandchild gone within seconds, and no retry
    assert res.returncode == 0, res.stderr
    assert "CANCELLED" in res.stdout
    wait_for(lambda: not any(alive(p) for p in first), 20, message="agent tree of attempt 1 gone")
    assert status_of(store, "TREE") == Status.CANCELLED
    time.sleep(2.5)  # longer than the 1 s backoff
    assert orchestrate(cli, env, "--once", "--mode", "celery").returncode == 0
    time.sleep(0.5)
    assert status_of(store, "TREE") == Status.CANCELLED
    assert [(r.attempt, r.status) for r in runs_of(store, "TREE")] == [(1, "cancelled")]

    # When the cancelled card is retried
    res = cli("retry", "TREE", env=env)

    # Expect a second attempt running
    assert res.returncode == 0, res.stderr
    second = running_attempt(2)

    # When that running card is retried with --force
    res = cli("retry", "TREE", "--force", env=env)

    # Expect the running agent ended first, then a third attempt started
    assert res.returncode == 0, res.stderr
    assert not any(alive(p) for p in second), "retry --force returned before the running agent was ended"
    third = running_attempt(3)
    assert [(r.attempt, r.status) for r in runs_of(store, "TREE")] == [
        (1, "cancelled"), (2, "cancelled"), (3, "running")]

    # Cleanup through the product itself
    assert cli("cancel", "TREE", env=env).returncode == 0
    wait_for(lambda: not any(alive(p) for p in third), 20, message="agent tree of attempt 3 gone")


def test_retry_of_a_done_card_without_force_exits_2_with_one_line(
        cli: Cli, env: dict[str, str], tmp_path: Path, store: CardStore) -> None:
    # Given a DONE card
    import_cards(cli, env, tmp_path, [{"card_id": "FINISHED", "title": "finished", "agent": "demo"}])
    assert orchestrate(cli, env, "--once", "--wait", "--mode", "local").returncode == 0
    assert status_of(store, "FINISHED") == Status.DONE

    # When it is retried without --force
    res = cli("retry", "FINISHED", env=env)

    # Expect exit 2, one line on stderr, nothing queued
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "FINISHED" in res.stderr and "DONE" in res.stderr
    assert status_of(store, "FINISHED") == Status.DONE
    assert len(runs_of(store, "FINISHED")) == 1


# ---- fallback -----------------------------------------------------------------------------------
def test_dead_broker_falls_back_to_local_mode_with_warning_but_celery_mode_refuses(
        cli: Cli, env: dict[str, str], tmp_path: Path, store: CardStore) -> None:
    # Given cards and a Redis URL where nothing listens
    env = {**env, "SQUAD_REDIS_URL": f"redis://127.0.0.1:{free_port()}"}
    ids = ["LOCAL-1", "LOCAL-2"]
    import_cards(cli, env, tmp_path, [{"card_id": c, "title": c, "agent": "demo"} for c in ids])

    # When celery mode is demanded
    forced = orchestrate(cli, env, "--once", "--wait", "--mode", "celery", timeout=60)

    # Expect exit 2 with one clear line, and nothing changed
    assert forced.returncode == 2
    assert len(forced.stderr.strip().splitlines()) == 1, forced.stderr
    assert "broker" in forced.stderr.lower() and "Traceback" not in forced.stderr
    assert settled(store, ids, Status.TODO)

    # When the mode is auto
    res = orchestrate(cli, env, "--once", "--wait", timeout=60)

    # Expect a clear warning, and the cards run locally
    assert res.returncode == 0, res.stderr
    assert "warning" in res.stderr.lower() and "local mode" in res.stderr
    assert "Traceback" not in res.stderr
    assert settled(store, ids)
    for card_id in ids:
        runs = runs_of(store, card_id)
        assert len(runs) == 1 and runs[0].status == "succeeded"
        assert (runs[0].worker or "").startswith("local@")


def test_an_orchestrator_started_before_its_workers_sends_every_card_to_them_and_status_says_celery(
        cli: Cli, env: dict[str, str], tmp_path: Path, start_worker: StartWorker, store: CardStore, spawn: Any,
        settings: Settings) -> None:
    # Given cards, a Redis that answers, and `squad orchestrate` started as README's distributed
    # set-up starts it (no flags) before any worker
    ids = [f"EARLY-{i}" for i in range(6)]
    import_cards(cli, env, tmp_path, [{"card_id": c, "title": c, "agent": "demo"} for c in ids])
    log = tmp_path / "orchestrator.log"
    with open(log, "wb") as out:
        orch = spawn("orchestrate", "--interval", "0.2", env=env, stdout=out)
    # Expect it to use Celery and to say at once that no worker consumes the queue; the cards wait there
    wait_for(lambda: "no worker is consuming `cards` yet" in log.read_text(), 60, message="the no-consumer line")
    assert "orchestrator: mode celery, session default" in log.read_text()
    wait_for(lambda: settled(store, ids, Status.QUEUED), 30, message="cards QUEUED")
    # ... and `squad status` to report the mode this orchestrator decided, naming it
    report = json.loads(cli("status", "--json", env=env).stdout)
    assert report["execution_mode"] == "celery"
    assert report["orchestrators"] == [f"session default: celery (pid {orch.pid} on {socket.gethostname()})"]

    # When two workers start after it
    workers = {start_worker(env).hostname, start_worker(env).hostname}

    # Expect every card to run exactly once, on one of them: none inside the orchestrator
    wait_for(lambda: settled(store, ids), 120, message="cards DONE")
    runs = [run for card_id in ids for run in runs_of(store, card_id)]
    assert len(runs) == len(ids) and {run.worker for run in runs} <= workers, [r.worker for r in runs]
    # ... and /health to say celery
    with run_api(settings) as api, api.client() as http:
        assert http.get("/health").json()["execution_mode"] == "celery"
    assert orch.poll() is None, log.read_text()


def test_status_and_health_report_the_mode_a_running_orchestrator_decided(
        cli: Cli, env: dict[str, str], spawn: Any, settings: Settings, tmp_path: Path) -> None:
    # Given a broker that answers (a producer would use Celery) and an orchestrator told to run locally
    log = tmp_path / "orchestrator.log"
    with open(log, "wb") as out:
        orch = spawn("orchestrate", "--mode", "local", "--interval", "0.2", env=env, stdout=out)
    wait_for(lambda: "mode local" in log.read_text(), 60, message="the orchestrator started")
    # Expect status and /health to say local while it runs
    with run_api(settings) as api, api.client() as http:
        report = json.loads(cli("status", "--json", env=env).stdout)
        assert report["execution_mode"] == "local", report
        assert report["orchestrators"] == [f"session default: local (pid {orch.pid} on {socket.gethostname()})"]
        assert http.get("/health").json()["execution_mode"] == "local"

        # When it stops
        orch.send_signal(signal.SIGTERM)
        assert orch.wait(timeout=60) == 143  # stopped by SIGTERM

        # Expect them to report what a producer would use again: the broker answers, so celery
        report = json.loads(cli("status", "--json", env=env).stdout)
        assert (report["execution_mode"], report["orchestrators"]) == ("celery", [])
        assert http.get("/health").json()["execution_mode"] == "celery"


# ---- logs --follow and status ---------------------------------------------------------------------
def test_logs_follow_prints_lines_live_and_ends_after_done(
        cli: Cli, env: dict[str, str], tmp_path: Path, start_worker: StartWorker, store: CardStore,
        spawn: Any) -> None:
    # Given a 3 s card and `squad logs --follow` started before it runs
    write_agents(tmp_path, agent_toml("talky", [PY, "-m", "squad.agents.demo"], SQUAD_DEMO_DURATION="3"))
    import_cards(cli, env, tmp_path, [{"card_id": "TALK", "title": "talk", "agent": "talky"}])
    start_worker(env, concurrency=1)
    follower = spawn("logs", "TALK", "--follow", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[str, str]] = []  # (card status when the line arrived, line)

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            lines.append((status_of(store, "TALK").value, line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # When the card runs
        assert orchestrate(cli, env, "--once", "--mode", "celery").returncode == 0

        # Expect lines while it runs, and the follower to end once it is DONE
        wait_for(lambda: any("demo agent: card TALK" in line for _s, line in lines), 60, message="first line")
        first = next(s for s, line in lines if "demo agent: card TALK" in line)
        assert first == "IN_PROGRESS", lines
        assert follower.wait(timeout=60) == 0
        reader.join(timeout=10)
    finally:
        if follower.poll() is None:
            kill_tree(follower)
    assert status_of(store, "TALK") == Status.DONE
    text = "\n".join(line for _s, line in lines)
    assert "done: updated SQUAD_DEMO.md" in text
    assert "attempt succeeded" in text


def test_status_json_lists_worker_redis_and_queue_depth(
        cli: Cli, env: dict[str, str], tmp_path: Path, start_worker: StartWorker, store: CardStore) -> None:
    # Given a worker that consumes only maintenance, and two cards waiting in the cards queue
    worker = start_worker(env, concurrency=1, queues="maintenance")
    import_cards(cli, env, tmp_path, [{"card_id": c, "title": c, "agent": "demo"} for c in ("Q-1", "Q-2")])
    assert orchestrate(cli, env, "--once", "--mode", "celery").returncode == 0

    # When the status is asked for
    res = cli("status", "--json", env=env)

    # Expect the worker, a connected Redis and the queue depth
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["redis"] == "connected"
    assert report["celery"] == "connected"
    assert worker.hostname in report["celery_workers"]
    assert report["queue_depth"] == 2
    assert report["execution_mode"] == "celery"
    assert report["database"] == "connected"
    assert report["cards"]["QUEUED"] == 2


def test_status_with_a_hung_redis_says_what_it_knows_and_names_what_did_not_answer(
        cli: Cli, sqlite_url: str, tmp_path: Path) -> None:
    # Given a store with a card, and a Redis that accepts connections but never answers (SIGSTOP)
    server = RedisServer(tmp_path / "hung-redis")
    server.start()
    assert server.proc is not None
    env = squad_env(SQUAD_REDIS_URL=server.url, SQUAD_DATABASE_URL=sqlite_url)
    assert cli("card", "add", "--id", "H-1", "--title", "one", env=env).returncode == 0
    try:
        server.proc.send_signal(signal.SIGSTOP)
        # When the status is asked for
        res = cli("status", "--json", env=env, timeout=60)
    finally:
        server.proc.send_signal(signal.SIGCONT)
        server.stop(kill=True)
    # Expect the store's answer, and Redis (with the orchestrators kept in it) named as not answering
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert (report["database"], report["cards"]["TODO"]) == ("connected", 1)
    assert report["redis"] == "no answer within 2 s" and report["celery"] == "error"
    assert report["orchestrators"] is None and report["execution_mode"] == "local"


def test_status_waits_for_the_registered_workers_only_and_says_no_workers_once_the_last_stopped(
        cli: Cli, env: dict[str, str], start_worker: StartWorker, settings: Settings) -> None:
    # Given one running worker: the broker counts it (the Celery ping of `squad status` ends once
    # that many workers answered, instead of always waiting its whole timeout)
    worker = start_worker(env, concurrency=1)
    view = BrokerView(settings.broker)
    assert view.registered_workers() == 1
    assert json.loads(cli("status", "--json", env=env).stdout)["celery_workers"] == [worker.hostname]

    # When it stops
    kill_tree(worker.proc)

    # Expect it unregistered, and status to say no worker (without a ping nobody could answer)
    wait_for(lambda: view.registered_workers() == 0, 30, message="worker unregistered")
    report = json.loads(cli("status", "--json", env=env).stdout)
    assert (report["redis"], report["celery"], report["celery_workers"]) == ("connected", "no_workers", [])
    view.close()


def test_worker_probes_of_a_long_lived_process_answer_after_redis_restarted(
        settings: Settings, redis_server: RedisServer) -> None:
    # Given a process (the API, `orchestrate --wait`) that already asked the workers once
    from squad.api.monitor import _broadcast
    from squad.live.celery_control import celery_workers

    assert celery_workers(settings, timeout_s=0.5) == []
    app = make_celery(settings)
    assert _broadcast(app) == ({}, {})
    # When Redis restarts (same port) and the process asks again
    redis_server.stop()
    redis_server.start(aof=False)
    # Expect answers ("no worker"), not a failure: a probe never reuses a connection opened before
    # (kombu pools them process-wide; one to the old server read "Connection closed by server")
    assert celery_workers(settings, timeout_s=0.5) == []
    assert _broadcast(app) == ({}, {})
    app.close()


# ---- reconciler -----------------------------------------------------------------------------------
def _one_queued_card(cli: Cli, env: dict[str, str], tmp_path: Path, store: CardStore, card_id: str) -> str | None:
    """Import one card and queue it with no worker running: its message's task id."""
    import_cards(cli, env, tmp_path, [{"card_id": card_id, "title": card_id.lower(), "agent": "demo"}])
    assert orchestrate(cli, env, "--once", "--mode", "celery").returncode == 0
    return store.get_card(card_id).celery_task_id


def test_reconciler_reenqueues_a_queued_card_whose_message_was_lost_and_runs_it_once(
        cli: Cli, env: dict[str, str], tmp_path: Path, start_worker: StartWorker, store: CardStore,
        redis_server: RedisServer) -> None:
    # Given a QUEUED card whose broker message vanished (no worker consumed it)
    env = {**env, "SQUAD_REQUEUE_AFTER": "1"}
    old_task_id = _one_queued_card(cli, env, tmp_path, store, "LOST")
    broker = redis_server.client(0)
    assert sum(broker.llen(k) for k in queue_keys()) == 1
    broker.delete(*queue_keys())
    worker = start_worker(env, concurrency=2)
    time.sleep(1.2)  # QUEUED for longer than SQUAD_REQUEUE_AFTER, and no worker has it
    assert status_of(store, "LOST") == Status.QUEUED

    # When `squad beat` schedules the reconciler task on the worker
    beat = subprocess.Popen([PY, "-m", "squad", "beat", "--loglevel", "INFO"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # Expect the card sent again under a new task id, DONE after exactly one run
        wait_for(lambda: status_of(store, "LOST") == Status.DONE, 90, message="LOST done")
        card = store.get_card("LOST")
        assert card.celery_task_id not in (None, old_task_id)
        reconciled = worker.log().count(f"Task {RECONCILE_TASK_NAME}[")
        wait_for(lambda: worker.log().count(f"Task {RECONCILE_TASK_NAME}[") > reconciled + 1, 60,
                 message="later reconciler passes")
        assert broker_idle(redis_server)
    finally:
        kill_tree(beat)
        try:
            os.killpg(beat.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    runs = runs_of(store, "LOST")
    assert [(r.attempt, r.status, r.task_id) for r in runs] == [(1, "succeeded", card.celery_task_id)]
    assert status_of(store, "LOST") == Status.DONE


# Takes one message from the cards queue as a Celery worker's consumer does (delivered, not acked:
# kombu records it in `unacked`), says so, and waits to be killed before it claims anything.
TAKE_AND_HANG = """
import time
from squad.core.settings import load_settings
from squad.live.celery_config import make_celery
with make_celery(load_settings()).connection_for_read() as conn:  # squad's transport options: its priority lists
    message = conn.default_channel.basic_get(queue="cards", no_ack=False)
    print(message.headers["id"] if message else "none", flush=True)
    time.sleep(600)
"""


def test_reconciler_resends_a_card_whose_message_a_dead_consumer_took_before_claiming_it(
        cli: Cli, env: dict[str, str], tmp_path: Path, start_worker: StartWorker, store: CardStore,
        redis_server: RedisServer) -> None:
    # Given a QUEUED card whose message a consumer took and then died with, before claiming the card
    # (Celery's `Unrecoverable error` when Redis goes away: 2 of about 14 loaded runs of the Redis
    # restart chaos test kept such a card QUEUED until kombu's visibility timeout, 40 minutes)
    env = {**env, "SQUAD_REQUEUE_AFTER": "2"}
    old_task_id = _one_queued_card(cli, env, tmp_path, store, "TAKEN")
    taker = subprocess.Popen([PY, "-c", TAKE_AND_HANG], stdout=subprocess.PIPE, text=True, env=env,
                             start_new_session=True)
    try:
        assert taker.stdout is not None and taker.stdout.readline().strip() == old_task_id
    finally:
        os.killpg(taker.pid, signal.SIGKILL)
        taker.wait(timeout=30)
        taker.stdout.close()
    broker = redis_server.client(0)
    assert sum(broker.llen(k) for k in queue_keys()) == 0 and broker.hlen(KOMBU_UNACKED_KEY) == 1

    # When a worker runs and `orchestrate --wait` reconciles
    start_worker(env, concurrency=2)
    res = orchestrate(cli, env, "--mode", "celery", "--wait", "--interval", "0.5", timeout=120)

    # Expect the card sent again under a new id and DONE after exactly one run
    assert res.returncode == 0, res.stderr[-3000:]
    assert "re-enqueueing card whose message is gone" in res.stderr
    card = store.get_card("TAKEN")
    assert card.status == Status.DONE and card.celery_task_id not in (None, old_task_id)
    runs = [(r.attempt, r.status, r.task_id) for r in runs_of(store, "TAKEN")]
    assert runs == [(1, "succeeded", card.celery_task_id)]


def test_an_agent_on_a_worker_cannot_read_the_workers_secrets_from_proc(
        cli: Cli, env: dict[str, str], tmp_path: Path, start_worker: StartWorker, store: CardStore) -> None:
    # Given a worker whose environment holds the API token, and an agent that reads every ancestor's
    # /proc/<pid>/environ (issue 21 item 3: `tr '\0' '\n' </proc/$PPID/environ`)
    token = f"tok-{uuid.uuid4().hex}"
    seen = tmp_path / "probe.json"
    # (unconfined: the subject is what an agent sees of its ancestors in /proc; in its sandbox it
    # sees none at all, tests/integration/test_sandbox.py)
    write_agents(tmp_path, agent_toml("probe", [PY, str(AGENTS / "probe.py"), str(seen)]),
                 sandbox='[sandbox]\nkind = "none"\n')
    env = {**env, "SQUAD_API_TOKEN": token}
    add_card(store, "PROC-1", agent="probe")
    start_worker(env, concurrency=1)
    # When the card runs there
    res = orchestrate(cli, env, "--once", "--wait", "--mode", "celery")
    # Expect it ran, saw its parents (pool process, Celery main, supervisor), and read no secret of theirs
    assert res.returncode == 0, res.stderr
    ancestors = json.loads(seen.read_text())["ancestors"]
    assert len(ancestors) >= 3, ancestors
    for ancestor in ancestors:
        assert token not in (ancestor["environ"] or ""), ancestor["cmdline"]
        assert env["SQUAD_DATABASE_URL"] not in (ancestor["environ"] or ""), ancestor["cmdline"]
