"""What Celery operators expect, against real processes: Flower reads our tasks, every service logs
JSON lines with the attempt's context, per-squad queues, --autoscale, and `squad worker --drain`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from squad.core.statuses import Status
from squad.store.card_store import CardStore
from support.cli import backlog, run_cli, squad_env
from support.fake_agents import ledger_counts, write_ledger_agent
from support.processes import free_port, kill_tree, wait_for
from support.workers import Worker

PY = sys.executable
StartWorker = Callable[..., Worker]
Spawn = Callable[..., tuple[subprocess.Popen[bytes], Path]]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Factory: a long-running process with its output in a file, ended (with its tree) after the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        procs.append(proc)
        return proc, log

    yield start
    for proc in procs:
        if proc.poll() is None:
            kill_tree(proc)


def json_lines(text: str) -> list[dict[str, Any]]:
    """The log lines that are JSON objects (Celery's banner and our one-line notes are not)."""
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def get_json(url: str) -> Any:
    try:
        resp = httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None
    return resp.json() if resp.status_code == 200 else None


def test_task_events_from_the_start_with_squad_task_events(
        tmp_path: Path, redis_url: str, sqlite_url: str, start_worker: StartWorker) -> None:
    # Given SQUAD_TASK_EVENTS=true, a Celery event receiver on our broker (no Flower to turn events on)
    from celery import Celery

    write_ledger_agent(tmp_path, 1)
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url, SQUAD_TASK_EVENTS="true")
    app = Celery(broker=f"{redis_url}/0")
    seen: list[dict[str, Any]] = []
    ready, receivers = threading.Event(), []

    def receive() -> None:
        with app.connection_for_read() as conn:
            recv = app.events.Receiver(conn, handlers={"*": seen.append})
            consume_ready = recv.on_consume_ready

            def on_ready(*args: Any, **kwargs: Any) -> None:
                consume_ready(*args, **kwargs)
                ready.set()

            recv.on_consume_ready = on_ready  # type: ignore[method-assign]
            receivers.append(recv)
            recv.capture(limit=None, timeout=None, wakeup=False)

    threading.Thread(target=receive, daemon=True).start()
    assert ready.wait(30), "event receiver did not subscribe"
    start_worker(env, concurrency=1, name="events-w@test")
    # When a card runs
    assert run_cli("backlog", "import", str(backlog(tmp_path / "c.json", ["EV-1"])), env=env).returncode == 0
    orch = run_cli("orchestrate", "--mode", "celery", "--wait", "--interval", "0.5", env=env, timeout=180)
    assert orch.returncode == 0, orch.stderr
    store = CardStore(sqlite_url)
    task_id = store.list_runs("EV-1")[0].task_id
    store.dispose()

    # Expect the sender's and the worker's events for its task, the worker's from our worker
    def events_of_task() -> set[str] | None:
        types = {ev["type"] for ev in list(seen) if ev.get("uuid") == task_id}
        return types if {"task-sent", "task-received", "task-succeeded"} <= types else None

    try:
        wait_for(events_of_task, 30, interval=0.2, message="task-sent, task-received, task-succeeded")
    finally:
        for recv in receivers:
            recv.should_stop = True
    assert {ev["hostname"] for ev in seen if ev.get("uuid") == task_id and ev["type"] == "task-succeeded"} == {
        "events-w@test"}


def test_flower_reads_our_tasks_and_worker_logs_are_json_with_the_attempt_context(
        tmp_path: Path, redis_url: str, sqlite_url: str, start_worker: StartWorker, spawn: Spawn) -> None:
    # Given Flower (from PyPI) started on our Celery app before any card runs, and a worker
    write_ledger_agent(tmp_path, 1)
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url, FLOWER_UNAUTHENTICATED_API="true")
    port = free_port()
    spawn("flower", [PY, "-m", "celery", "-A", "squad.celery_app", "flower", f"--port={port}",
                     "--address=127.0.0.1"], env)
    wait_for(lambda: get_json(f"http://127.0.0.1:{port}/api/workers") is not None, 60, interval=0.5,
             message="Flower API")
    worker = start_worker(env, concurrency=2, name="flower-w@test")
    # Task events are off by default (SQUAD_TASK_EVENTS): Flower turns them on itself (`enable_events`
    # every 5 s), which the worker logs. (Its heartbeats reach Flower either way: they are not task events.)
    wait_for(lambda: "Events of group {task} enabled by remote" in worker.log(), 60, interval=0.5,
             message="Flower to turn on the worker's task events")
    # When two cards run
    ids = ["FL-1", "FL-2"]
    assert run_cli("backlog", "import", str(backlog(tmp_path / "c.json", ids)), env=env).returncode == 0
    # (a one-shot run logs only warnings; SQUAD_DEBUG=1 shows its records, as an operator would ask)
    orch = run_cli("orchestrate", "--mode", "celery", "--wait", "--interval", "0.5", env={**env, "SQUAD_DEBUG": "1"},
                   timeout=180)
    assert orch.returncode == 0, orch.stderr
    store = CardStore(sqlite_url)
    task_ids = {c: store.list_runs(c)[0].task_id for c in ids}
    store.dispose()

    # Expect Flower to list them by our task name with state SUCCESS, on our worker
    def flower_tasks() -> dict[str, Any] | None:
        tasks = get_json(f"http://127.0.0.1:{port}/api/tasks") or {}
        ours = {tid: tasks[tid] for tid in task_ids.values() if tid in tasks}
        done = len(ours) == len(ids) and all(t.get("state") == "SUCCESS" for t in ours.values())
        return ours if done else None

    ours = wait_for(flower_tasks, 60, interval=0.5, message="Flower to see both tasks succeed")
    assert isinstance(ours, dict)
    assert {t["name"] for t in ours.values()} == {"squad.execute_card_task"}
    assert {t["worker"] for t in ours.values()} == {"flower-w@test"}
    # And the worker's log lines are JSON, those of an attempt bound to card, task, attempt and worker
    lines = json_lines(worker.log())
    ended = [line for line in lines if line.get("event") == "attempt ended"]
    assert {(e["card_id"], e["task_id"], e["attempt"], e["worker"]) for e in ended} == {
        (c, task_ids[c], 1, "flower-w@test") for c in ids}
    assert any(line.get("logger", "").startswith("celery") for line in lines)  # Celery's own lines too
    orch_lines = json_lines(orch.stderr)
    assert {line["card_id"] for line in orch_lines if line.get("event") == "card enqueued"} == set(ids)


def test_beat_and_api_log_json_lines(tmp_path: Path, redis_url: str, sqlite_url: str, spawn: Spawn) -> None:
    # Given beat and the API started with their output going to files (not a terminal)
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url)
    port = free_port()
    _beat, beat_log = spawn("beat", [PY, "-m", "squad", "beat"], env)
    _api, api_log = spawn("api", [PY, "-m", "squad", "serve", "--port", str(port)], env)
    # When they start and the API serves a request
    wait_for(lambda: get_json(f"http://127.0.0.1:{port}/health") is not None, 60, interval=0.5, message="API up")
    wait_for(lambda: any("Starting" in str(line.get("event")) for line in json_lines(beat_log.read_text())), 60,
             interval=0.5, message="beat's start-up line")
    # Expect both to log JSON lines, uvicorn's and Celery beat's included
    api_lines = json_lines(api_log.read_text())
    assert any(line.get("logger", "").startswith("uvicorn") for line in api_lines), api_log.read_text()
    assert all({"event", "level", "timestamp"} <= set(line) for line in api_lines)
    beat_lines = json_lines(beat_log.read_text())
    assert any(line.get("logger", "").startswith("celery") for line in beat_lines)


def test_squad_routes_send_cards_to_their_queue_and_autoscale_reaches_celery(
        tmp_path: Path, redis_url: str, sqlite_url: str, start_worker: StartWorker) -> None:
    # Given squad `gpu` routed to queue `gpu`, a gpu worker with --autoscale 3,1 and a default worker
    ledger = write_ledger_agent(tmp_path, 0.5)
    with (tmp_path / "squad.toml").open("a") as toml:
        toml.write('[routes]\ngpu = "gpu"\n')
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url)
    start_worker(env, name="gpu@test", queues="gpu", extra=["--autoscale", "3,1"])
    start_worker(env, concurrency=1, name="cpu@test")
    cards = [{"card_id": f"G-{i}", "title": "g", "squad": "gpu"} for i in range(3)]
    cards += [{"card_id": f"C-{i}", "title": "c"} for i in range(3)]
    (tmp_path / "cards.json").write_text(json.dumps({"cards": cards}))
    assert run_cli("backlog", "import", str(tmp_path / "cards.json"), env=env).returncode == 0
    # When the backlog runs
    orch = run_cli("orchestrate", "--mode", "celery", "--wait", "--interval", "0.5", env=env, timeout=180)
    # Expect squad gpu's cards only on the gpu worker, the others only on the default worker
    assert orch.returncode == 0, orch.stderr
    assert ledger_counts(ledger, "done") == {c["card_id"]: 1 for c in cards}
    store = CardStore(sqlite_url)
    workers = {c["card_id"]: store.list_runs(c["card_id"])[0].worker for c in cards}
    store.dispose()
    assert workers == {c["card_id"]: "gpu@test" if c["card_id"].startswith("G") else "cpu@test" for c in cards}
    # And the gpu worker's pool is Celery's autoscaler with max 3, min 1
    from squad.core.settings import load_settings
    from squad.live.celery_config import make_celery
    from squad.live.celery_control import probe_connection

    app = make_celery(load_settings(redis_url=redis_url, database_url=sqlite_url))
    with probe_connection(app) as conn:  # as squad's probes do: never a pooled connection
        stats = app.control.inspect(destination=["gpu@test"], timeout=5, connection=conn).stats() or {}
    app.close()
    autoscaler = stats["gpu@test"]["autoscaler"]
    assert (autoscaler["max"], autoscaler["min"]) == (3, 1), autoscaler


def test_drain_finishes_the_running_card_takes_no_new_one_and_the_worker_exits(
        tmp_path: Path, redis_url: str, sqlite_url: str, start_worker: StartWorker) -> None:
    # Given a worker running a card that lasts until the test releases it, another card queued behind it
    release = tmp_path / "release"
    ledger = write_ledger_agent(tmp_path, 120, release)
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url)
    worker = start_worker(env, concurrency=1, name="drain@test")
    assert run_cli("backlog", "import", str(backlog(tmp_path / "a.json", ["LONG"])), env=env).returncode == 0
    assert run_cli("orchestrate", "--mode", "celery", "--once", env=env).returncode == 0
    wait_for(lambda: ledger_counts(ledger, "start")["LONG"] == 1, 60, interval=0.2, message="LONG to start")
    assert run_cli("backlog", "import", str(backlog(tmp_path / "b.json", ["NEXT"])), env=env).returncode == 0
    assert run_cli("orchestrate", "--mode", "celery", "--once", env=env).returncode == 0
    # When the worker is drained while LONG runs, and LONG ends only after the drain began
    drain = subprocess.Popen([PY, "-m", "squad", "worker", "--drain", "--hostname", "drain@test"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: "Got shutdown from remote" in worker.log(), 60, interval=0.2, message="the drain to begin")
        assert drain.poll() is None, "the drain must wait for the running card"
        release.touch()
        out, err = drain.communicate(timeout=120)
    finally:
        if drain.poll() is None:
            kill_tree(drain)
    drained = subprocess.CompletedProcess(drain.args, drain.returncode, out, err)
    # Expect the running card finished, the queued one not taken, and the worker gone with exit code 0
    assert drained.returncode == 0, drained.stderr
    assert "drained and stopped: drain@test" in drained.stdout
    store = CardStore(sqlite_url)
    assert store.get_card("LONG").status == Status.DONE
    assert ledger_counts(ledger, "done") == {"LONG": 1}
    assert worker.proc.wait(timeout=60) == 0, worker.log()
    assert store.get_card("NEXT").status == Status.QUEUED and "NEXT" not in ledger_counts(ledger, "start")
    store.dispose()


def test_drain_of_an_unknown_worker_is_one_line_exit_2(redis_url: str, sqlite_url: str) -> None:
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url)
    proc = run_cli("worker", "--drain", "--hostname", "nobody@nowhere", env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no worker to drain" in proc.stderr


def test_every_metric_in_the_sample_alert_rules_is_exposed_by_metrics(api: Any) -> None:
    # Given the sample rules file of docs/operations.md and a running API
    import re

    import yaml
    from prometheus_client.parser import text_string_to_metric_families

    rules = yaml.safe_load((Path(__file__).resolve().parents[2] / "docs" / "prometheus-rules.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    named = {re.sub(r"_(bucket|count|sum)$", "", m) for e in exprs for m in re.findall(r"\bsquad_[a-z_]+", e)}
    # When /metrics is scraped
    with api.client() as http:
        text = http.get("/metrics").text
    exposed = set(re.findall(r"^# TYPE (\S+)", text, re.M))  # families, also those with no sample yet
    exposed |= {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}
    # Expect every metric an alert uses to exist (a rename would silently disable the alert)
    assert named and named <= exposed, named - exposed
    assert {"squad_cards_total", "squad_runs_total", "squad_run_duration_seconds", "squad_queue_length",
            "squad_workers_online", "squad_cost_usd_total"} <= exposed


def test_a_process_opening_a_fresh_database_waits_while_another_holds_the_migration_lock(pg_url: str) -> None:
    # Given a fresh PostgreSQL database whose migration lock another process (this test) holds
    import sqlalchemy as sa

    from squad.store.db import PG_MIGRATION_LOCK_ID

    engine = sa.create_engine(pg_url)
    holder = engine.connect()
    holder.exec_driver_sql(f"SELECT pg_advisory_lock({PG_MIGRATION_LOCK_ID})")
    code = ("import sys; from squad.store.card_store import CardStore; CardStore(sys.argv[1]).dispose();"
            " print('migrated')")
    proc = subprocess.Popen([PY, "-c", code, pg_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # When a second process opens (and would migrate) the store
        # Expect it to wait: no schema appears while the lock is held
        def tables() -> set[str]:
            with engine.connect() as conn:
                return set(sa.inspect(conn).get_table_names())

        wait_for(lambda: any(a["wait_event_type"] == "Lock" and "advisory" in a["query"] for a in _pg_activity(engine)),
                 60, interval=0.2, message="the second process to wait on the migration lock")
        assert proc.poll() is None and "cards" not in tables()
        # When the lock is released, it migrates and finishes
        holder.exec_driver_sql(f"SELECT pg_advisory_unlock({PG_MIGRATION_LOCK_ID})")
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.strip() == "migrated" and "cards" in tables()
    finally:
        holder.close()
        if proc.poll() is None:
            kill_tree(proc)
        engine.dispose()


def _pg_activity(engine: Any) -> list[dict[str, Any]]:
    """Other sessions of this database, with what they wait for."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT wait_event_type, query FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()").mappings().all()
    return [dict(r) for r in rows]
