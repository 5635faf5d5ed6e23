"""Two stores on one Redis never see each other's live logs or events (docs/api.md "WebSocket" namespaces).

Keys used to be the card id alone: a PostgreSQL store showed the live log of the SQLite store's card
with the same id, and `squad up --demo` mixed its events with the default store's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from websockets.sync.client import connect

from squad.core.settings import load_settings
from squad.core.statuses import Status
from squad.live.events import EventBus, status_event
from squad.store.card_store import CardStore
from support.api import run_api
from support.cli import run_cli, squad_env
from support.store import redis_keys
from support.workers import StartWorker


def test_each_store_has_a_lasting_instance_id(sqlite_url: str, pg_url: str) -> None:
    first, again, other = CardStore(sqlite_url), CardStore(sqlite_url), CardStore(pg_url)
    try:
        assert first.instance_id == again.instance_id  # kept in the database, the same in every process
        assert first.instance_id != other.instance_id
        assert first.redis_keys.task_updates == f"squad:{first.instance_id}:task_updates"
        assert first.redis_keys.task_logs("A-1") == f"squad:{first.instance_id}:task:logs:A-1"
    finally:
        for store in (first, again, other):
            store.dispose()


def test_a_sqlite_and_a_postgresql_store_on_one_redis_see_only_their_own_logs_and_events(
        redis_url: str, sqlite_url: str, pg_url: str, tmp_path: Path) -> None:
    # Given two stores sharing one Redis, each with a card SAME-1
    env_a = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url, USE_CELERY="false",
                      SQUAD_DEMO_DURATION="0.5")
    env_b = {**env_a, "SQUAD_DATABASE_URL": pg_url}
    (tmp_path / "backlog.json").write_text(json.dumps({"cards": [{"card_id": "SAME-1", "title": "t",
                                                                  "agent": "demo"}]}))
    for env in (env_a, env_b):
        assert run_cli("backlog", "import", "backlog.json", env=env).returncode == 0
    settings_b = load_settings(redis_url=redis_url, database_url=pg_url)
    with run_api(settings_b) as api_b, connect(api_b.ws_url, open_timeout=10) as ws_b:
        assert json.loads(ws_b.recv(timeout=10))["type"] == "connected"

        # When store A runs its card (live log and events in Redis)
        ran = run_cli("orchestrate", "--mode", "local", "--once", "--wait", "--interval", "0.2", env=env_a)
        assert ran.returncode == 0, ran.stderr

        # Expect store A to show its live log, store B none of it
        logs_a = run_cli("logs", "SAME-1", env=env_a)
        assert "demo agent: card SAME-1" in logs_a.stdout, logs_a.stdout + logs_a.stderr
        logs_b = run_cli("logs", "SAME-1", env=env_b)
        assert logs_b.returncode == 0 and logs_b.stdout == "", logs_b.stdout
        assert "card SAME-1 has no log yet" in logs_b.stderr
        with api_b.client() as http:
            assert http.get("/api/tasks/SAME-1/logs").json() == []
        # ... and B's WebSocket feed to carry B's next event, none of A's before it
        store_b = CardStore(pg_url)
        bus_b = EventBus(settings_b.events, store_b.redis_keys)
        bus_b.publish(status_event("SAME-1", Status.TODO, event_id="from-b"))
        first = json.loads(ws_b.recv(timeout=20))
        assert first.get("event_id") == "from-b", first
        bus_b.close()
        store_b.dispose()

    # And every key in the events DB to carry one of the two namespaces
    prefixes = (redis_keys(sqlite_url).namespace + ":", redis_keys(pg_url).namespace + ":")
    keys = redis.Redis.from_url(redis_url + "/2", decode_responses=True).keys("*")
    assert keys and all(k.startswith(prefixes) for k in keys), keys


# ---- the broker queue ----------------------------------------------------------------------------
def _store_env(redis_url: str, tmp_path: Path, name: str, **extra: str) -> dict[str, str]:
    return squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=f"sqlite:///{tmp_path / name}.db",
                     SQUAD_DEMO_DURATION="0.3", SQUAD_WORKDIR=str(tmp_path / f"work-{name}"),
                     # a dropped message would be re-sent only after 10 minutes: the waits below end first
                     SQUAD_REQUEUE_AFTER="600", **extra)


@pytest.mark.parametrize("queues", ["shared", "own"])
def test_two_stores_on_one_redis_each_run_every_card_once_on_their_own_workers(
        redis_url: str, tmp_path: Path, start_worker: StartWorker, queues: str) -> None:
    # Given two stores on one Redis with the same card ids, and workers of both. "shared": both on the
    # default queue `cards` (messages carry their store; a worker of the other store forwards them to
    # that store's own copy of the queue);
    # "own": the second store has a queue of its own (SQUAD_CARDS_QUEUE, as `squad up` sets it)
    own = {"SQUAD_CARDS_QUEUE": "cards.b", "SQUAD_MAINTENANCE_QUEUE": "maintenance.b"} if queues == "own" else {}
    envs = {"a": _store_env(redis_url, tmp_path, "a"), "b": _store_env(redis_url, tmp_path, "b", **own)}
    ids = [f"SAME-{i}" for i in range(8)]
    (tmp_path / "backlog.json").write_text(json.dumps({"cards": [{"card_id": c, "title": c, "agent": "demo"}
                                                                 for c in ids]}))
    workers = {}
    for name, env in envs.items():
        assert run_cli("backlog", "import", "backlog.json", env=env).returncode == 0
        # default queues: `cards,maintenance`, or the store's own (SQUAD_CARDS_QUEUE, ...)
        workers[name] = [start_worker(env, concurrency=2, name=f"{name}{i}@test", queues=None) for i in range(2)]

    # When both stores release their cards at once
    procs = {name: subprocess.Popen([sys.executable, "-m", "squad", "orchestrate", "--mode", "celery", "--once",
                                     "--wait", "--interval", "0.2", "--timeout", "90"],
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, env in envs.items()}
    outs = {name: proc.communicate(timeout=120) for name, proc in procs.items()}

    # Expect every card of both stores DONE, each run exactly once, on a worker of its own store
    for name, env in envs.items():
        assert procs[name].returncode == 0, outs[name][1]
        store = CardStore(env["SQUAD_DATABASE_URL"])
        try:
            for card_id in ids:
                runs = store.list_runs(card_id)
                assert [r.status for r in runs] == ["succeeded"], (name, card_id, runs)
                assert runs[0].worker in {w.hostname for w in workers[name]}, (name, card_id, runs[0].worker)
        finally:
            store.dispose()
    # ... and a worker that forwarded another store's message said so at most once (per process and store)
    logs = [w.log() for ws in workers.values() for w in ws]
    said = [log.count("message of another store forwarded") for log in logs]
    if queues == "own":
        assert sum(said) == 0
    else:
        assert all(n <= 2 for n in said), said  # two pool processes per worker
