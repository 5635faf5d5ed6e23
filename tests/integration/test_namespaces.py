"""Two stores on one Redis never see each other's live logs or events (docs/api.md "WebSocket" namespaces).

Keys used to be the card id alone: a PostgreSQL store showed the live log of the SQLite store's card
with the same id, and `squad up --demo` mixed its events with the default store's.
"""

from __future__ import annotations

import json
from pathlib import Path

import redis
from websockets.sync.client import connect

from squad.core.cards import Status
from squad.core.settings import load_settings
from squad.live.events import EventBus, status_event
from squad.store.card_store import CardStore
from support.api import run_api
from support.cli import run_cli, squad_env
from support.store import redis_keys


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
