"""Redis memory is bounded (docs/security.md): a card's live log by entries and bytes, log events on
the shared stream truncated, the embedded Redis capped with noeviction, and a full Redis reported
clearly instead of failing cards. Real redis-server processes and real agents in local mode."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import redis

from squad.core.cards import CardSpec
from squad.core.constants import (
    LIVE_LOG_ENTRY_MAX_CHARS,
    LOG_EVENT_MAX_CHARS,
    TASK_LOGS_MAX_BYTES,
)
from squad.core.statuses import Status
from squad.ops.embedded_redis import EmbeddedRedis, redis_binary
from squad.store.card_store import CardStore
from support.cli import run_cli, squad_env
from support.fake_agents import sandbox_toml
from support.paths import AGENTS
from support.processes import free_port

PY = sys.executable
ORCHESTRATE = ["orchestrate", "--mode", "local", "--once", "--wait", "--interval", "0.2"]


def project(tmp_path: Path, redis_url: str, agent_argv: list[str]) -> tuple[dict[str, str], CardStore]:
    quoted = ", ".join(f'"{a}"' for a in agent_argv)
    (tmp_path / "squad.toml").write_text(f'default_agent = "a"\n{sandbox_toml()}[agents.a]\ncommand = [{quoted}]\n'
                                         'parser = "plain"\n', encoding="utf-8")
    env = squad_env(USE_CELERY="false", SQUAD_REDIS_URL=redis_url, SQUAD_MAX_RETRIES="0",
                    SQUAD_DATABASE_URL=f"sqlite:///{tmp_path / 'squad.db'}")
    return env, CardStore(env["SQUAD_DATABASE_URL"])


def test_a_card_live_log_is_bounded_in_bytes_and_log_events_are_truncated(redis_url: str, tmp_path: Path) -> None:
    # Given an agent printing 4,000 lines of 20 KB (80 MB: far more bytes than a live log may hold)
    env, store = project(tmp_path, redis_url, [PY, str(AGENTS / "wide_lines.py"), "4000", "20000"])
    store.add_cards([CardSpec(card_id="WIDE", title="t")])
    # When it runs with live logs in Redis
    proc = run_cli(*ORCHESTRATE, env=env)
    assert proc.returncode == 0, proc.stderr
    # Expect the live stream near its byte budget (approximate trimming: within twice), entries cut
    client = redis.Redis.from_url(redis_url.rstrip("/") + "/2", decode_responses=True)
    entries = client.xrange(store.redis_keys.task_logs("WIDE"))
    total = sum(len(fields["message"]) for _id, fields in entries)
    assert total <= 2 * TASK_LOGS_MAX_BYTES, total
    assert max(len(fields["message"]) for _id, fields in entries) <= LIVE_LOG_ENTRY_MAX_CHARS + 40
    assert entries[-1][1]["message"] == "attempt succeeded"
    # And log events on the shared stream carry a bounded message
    events = client.xrange(store.redis_keys.task_updates)
    logs = [f for _id, f in events if f.get("type") == "log"]
    assert logs and max(len(f["message"]) for f in logs) <= LOG_EVENT_MAX_CHARS + 40
    # And the archive still keeps whole lines (up to its own cap)
    _run, archived = store.last_run_log("WIDE") or (None, "")
    assert "w" * 19_000 in archived
    store.dispose()


def test_the_embedded_redis_has_maxmemory_with_noeviction(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", free_port(), aof=False)
    server.start()
    try:
        client = redis.Redis(port=server.port, decode_responses=True)
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert int(client.config_get("maxmemory")["maxmemory"]) == 512 * 1024 * 1024
        client.close()
    finally:
        server.stop()


def test_a_full_redis_is_reported_clearly_and_cards_still_finish(tmp_path: Path) -> None:
    # Given a small Redis filled up to its maxmemory
    port = free_port()
    proc = subprocess.Popen([redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--maxmemory", "4mb", "--maxmemory-policy", "noeviction",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port, socket_connect_timeout=1)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        try:
            for n in range(10_000):
                client.set(f"junk:{n}", b"j" * 10_000)
        except redis.exceptions.OutOfMemoryError:
            pass
        url = f"redis://127.0.0.1:{port}"
        env, store = project(tmp_path, url, [PY, str(AGENTS / "markers.py")])
        store.add_cards([CardSpec(card_id="FULL", title="t")])
        # When a card runs and the operator asks for the status
        run = run_cli(*ORCHESTRATE, env=env)
        status = run_cli("status", env=env)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # Expect the card to finish, and both to say plainly that Redis is full
    assert run.returncode == 0, run.stderr
    assert store.get_card("FULL").status == Status.DONE
    assert "Redis is full" in run.stderr, run.stderr
    assert status.returncode == 0, status.stderr
    assert "redis: full" in status.stdout and "Redis is full" in status.stdout, status.stdout
    store.dispose()
