"""Several machines: two `squad worker`s (own hostnames, own SQUAD_WORKDIRs) share one PostgreSQL
and one password-protected Redis; work spreads over both, every card runs exactly once, and no
process prints the password."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from ledger import backlog, ledger_counts, write_ledger_agent

from conftest import Worker, free_port, kill_tree, run_cli, squad_env, wait_for
from squad.embedded import redis_binary

PY = sys.executable
PASSWORD = "Sq-pass-4f7a9e"


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of our own that refuses clients without the password (URL with it)."""
    port = free_port()
    proc = subprocess.Popen([redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--requirepass", PASSWORD,
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    client = redis.Redis(port=port, password=PASSWORD, socket_connect_timeout=1)
    wait_for(lambda: _pings(client), 15, message="password redis-server")
    client.close()
    yield f"redis://:{PASSWORD}@127.0.0.1:{port}"
    kill_tree(proc)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_two_workers_share_postgresql_and_a_password_redis_each_card_once_no_password_printed(
        tmp_path: Path, pg_url: str, password_redis: str, start_worker: object) -> None:
    # Given one PostgreSQL store, one Redis that needs a password, and a ledger-keeping agent
    ledger = write_ledger_agent(tmp_path, 2)
    base = {"SQUAD_REDIS_URL": password_redis, "SQUAD_DATABASE_URL": pg_url}
    machines = {name: squad_env(**base, SQUAD_WORKDIR=str(tmp_path / name)) for name in ("m1", "m2")}
    # When two workers start as two machines would (own hostname, own working directory)
    workers: list[Worker] = [start_worker(env, concurrency=2, name=f"{name}@test")  # type: ignore[operator]
                             for name, env in machines.items()]
    ids = [f"MM-{i:02d}" for i in range(8)]
    env = squad_env(**base)
    imported = run_cli("backlog", "import", str(backlog(tmp_path / "cards.json", ids)), env=env)
    assert imported.returncode == 0, imported.stderr
    # And one orchestrator releases the backlog and waits for it
    orch = run_cli("orchestrate", "--mode", "celery", "--wait", "--interval", "0.5", env=env, timeout=240)
    status = run_cli("status", env=env)

    # Expect every card DONE with exactly one finished agent run, spread over both machines
    assert orch.returncode == 0, orch.stdout + orch.stderr
    done = ledger_counts(ledger, "done")
    assert done == Counter(dict.fromkeys(ids, 1)), done
    cwds = [line.split()[4] for line in ledger.read_text().splitlines() if line.startswith("done ")]
    per_machine = Counter(next(m for m in machines if cwd.startswith(str(tmp_path / m))) for cwd in cwds)
    assert set(per_machine) == {"m1", "m2"}, per_machine
    shown = run_cli("card", "list", "--json", env=env)
    assert shown.returncode == 0 and shown.stdout.count('"DONE"') == len(ids)
    # And no process printed the password: workers (with Celery's banner), orchestrator, CLI
    assert status.returncode == 0, status.stderr
    outputs = {w.hostname: w.log() for w in workers}
    outputs |= {"orchestrate": orch.stdout + orch.stderr, "status": status.stdout + status.stderr,
                "import": imported.stdout + imported.stderr}
    assert "transport:" in outputs["m1@test"]  # the banner was printed ...
    for name, text in outputs.items():
        assert PASSWORD not in text, f"{name} printed the Redis password"  # ... without the password
    assert "***" in outputs["status"] and "***" in outputs["m1@test"]
