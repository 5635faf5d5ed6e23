"""`squad deploy`: the generated configs run as generated, under the real supervisord (from PyPI),
and systemd units that `systemd-analyze verify` accepts."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import psutil

from squad.core.statuses import Status
from squad.store.card_store import CardStore
from support.cli import backlog, run_cli, squad_env
from support.fake_agents import ledger_counts, write_ledger_agent
from support.processes import alive, free_port, wait_for

PY = sys.executable


def supervisorctl(conf: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "supervisor.supervisorctl", "-c", str(conf), *args], capture_output=True,
                          text=True, env=env, timeout=60, check=False)


def program_pid(conf: Path, name: str, env: dict[str, str]) -> int:
    out = supervisorctl(conf, "pid", f"squad:{name}", env=env).stdout.strip()
    return int(out) if out.isdigit() else 0


def test_generated_supervisord_config_runs_cards_restarts_a_killed_worker_and_shuts_down_clean(
        tmp_path: Path, redis_url: str) -> None:
    # Given a project with a ledger-keeping agent, a real Redis and settings only in env + squad.toml
    ledger = write_ledger_agent(tmp_path, 3)
    db = f"sqlite:///{tmp_path / 'squad.db'}"
    port = free_port()
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=db, SQUAD_LEASE_S="3",
                    SQUAD_RETRY_BACKOFF="0.5", SQUAD_REQUEUE_AFTER="3", SQUAD_SOFT_TIME_LIMIT="50",
                    SQUAD_TIME_LIMIT="60")
    conf = tmp_path / "supervisord.conf"

    # When `squad deploy supervisord -o` writes the config
    made = run_cli("deploy", "supervisord", "-o", str(conf), "--run-dir", "run", "--log-dir", "logs",
                   "--concurrency", "2", "--api-port", str(port), env=env)

    # Expect a private file, said so, holding the current settings and long enough stop timeouts
    assert made.returncode == 0, made.stderr
    assert "0600" in made.stdout
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    text = conf.read_text()
    for section in ("[supervisord]", "[unix_http_server]", "[supervisorctl]", "[rpcinterface:supervisor]",
                    "[program:squad-worker]", "[program:squad-beat]", "[program:squad-orchestrator]",
                    "[program:squad-api]", "[group:squad]"):
        assert section in text, section
    assert f'SQUAD_REDIS_URL="{redis_url}"' in text and f'SQUAD_DATABASE_URL="{db}"' in text
    assert "stopwaitsecs=120" in text and "killasgroup=true" in text and "stopasgroup=true" in text

    # When supervisord runs it as is (it daemonizes) and a backlog is imported
    started = subprocess.run([PY, "-m", "supervisor.supervisord", "-c", str(conf)], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60, check=False)
    assert started.returncode == 0, started.stderr
    pidfile = tmp_path / "run" / "supervisord.pid"
    wait_for(pidfile.exists, 30, message="supervisord pid file")
    supervisord_pid = int(pidfile.read_text())
    tree: list[int] = []
    try:
        wait_for(lambda: supervisorctl(conf, "status", env=env).stdout.count("RUNNING") == 4, 60,
                 interval=1, message="4 programs RUNNING")
        ids = [f"SV-{i}" for i in range(6)]
        imported = run_cli("backlog", "import", str(backlog(tmp_path / "cards.json", ids)), env=env)
        assert imported.returncode == 0, imported.stderr
        store = CardStore(db)
        wait_for(lambda: ledger_counts(ledger, "start"), 90, message="a card to start")

        # When the worker program is SIGKILLed mid-card (only the process supervisord watches)
        worker_pid = program_pid(conf, "squad-worker", env)
        tree = [p.pid for p in psutil.Process(worker_pid).children(recursive=True)]
        os.kill(worker_pid, signal.SIGKILL)

        # Expect its Celery worker, pool and agents to die with it, supervisord to restart it,
        # and every card DONE with exactly one finished agent run
        wait_for(lambda: not any(alive(p) for p in tree), 30, message="the killed worker's whole tree to die")
        wait_for(lambda: program_pid(conf, "squad-worker", env) not in (0, worker_pid), 60,
                 message="supervisord to restart the worker")
        wait_for(lambda: all(c.status == Status.DONE for c in store.list_cards()), 180, interval=0.5,
                 message="every card DONE")
        done = ledger_counts(ledger, "done")
        assert done == Counter(dict.fromkeys(ids, 1)), done
        lost = [r for c in ids for r in store.list_runs(c) if r.error == "worker lost"]
        assert lost, "the killed worker's card was recorded as lost and retried"
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
        assert health.status_code == 200 and health.json()["database"]
        store.dispose()
        programs = [p.pid for p in psutil.Process(supervisord_pid).children(recursive=True)]
    finally:
        # When supervisorctl shuts everything down
        stopped = supervisorctl(conf, "shutdown", env=env)
        for pid in tree:  # only left if the test failed above: never leak them into other tests
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    # Expect supervisord and every process it started to be gone
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    wait_for(lambda: not alive(supervisord_pid), 60, message="supervisord to exit")
    wait_for(lambda: not any(alive(p) for p in programs), 30, message="no process left behind")
    assert (tmp_path / "logs" / "squad-worker.log").stat().st_size > 0


def test_systemd_units_and_a_private_environment_file_that_systemd_analyze_accepts(tmp_path: Path) -> None:
    # Given settings with a password and a non-default hard limit
    env = squad_env(SQUAD_REDIS_URL="redis://:s3cret%$@redis.example:6379", SQUAD_TIME_LIMIT="600",
                    SQUAD_SOFT_TIME_LIMIT="500",
                    SQUAD_DATABASE_URL="postgresql+psycopg://squad:pw@db.example/squad")
    # When `squad deploy systemd -o DIR` writes the units
    made = run_cli("deploy", "systemd", "-o", str(tmp_path / "units"), "--user", "root", env=env)
    assert made.returncode == 0, made.stderr
    assert "0600" in made.stdout
    units = {p.name: p.read_text() for p in (tmp_path / "units").glob("*.service")}
    # Expect one unit per program with restart, mixed kill mode and a stop timeout above the limits
    assert set(units) == {"squad-worker.service", "squad-beat.service", "squad-orchestrator.service",
                          "squad-api.service"}
    envfile = tmp_path / "units" / "squad.env"
    for name, unit in units.items():
        lines = unit.splitlines()
        for expected in ("[Unit]", "[Service]", "[Install]", "Restart=always", "KillMode=mixed",
                         "TimeoutStopSec=660", f"EnvironmentFile={envfile}", f"WorkingDirectory={tmp_path}"):
            assert expected in lines, (name, expected)
        exec_start = next(line for line in lines if line.startswith("ExecStart="))
        assert exec_start.startswith(f"ExecStart={PY} -m squad "), exec_start
        assert "s3cret" not in unit
    assert "--hostname squad-worker@%%h" in units["squad-worker.service"]  # systemd's %h is $HOME
    # The environment file is private and carries the settings (systemd quoting: \" \\ \$)
    assert stat.S_IMODE(envfile.stat().st_mode) == 0o600
    env_lines = envfile.read_text().splitlines()
    assert 'SQUAD_REDIS_URL="redis://:s3cret%\\$@redis.example:6379"' in env_lines
    assert 'SQUAD_TIME_LIMIT="600"' in env_lines
    # And systemd itself accepts the units (verify is silent and exits 0) where it is installed
    analyze = shutil.which("systemd-analyze")
    if analyze:
        verified = subprocess.run([analyze, "verify", *sorted(str(p) for p in (tmp_path / "units").glob("*.service"))],
                                  capture_output=True, text=True, timeout=60, check=False)
        assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr


def test_deploy_refuses_control_characters_in_paths_and_users_and_escapes_percent_for_systemd(tmp_path: Path) -> None:
    # Given a project folder whose name holds newlines that would start a program or an ExecStartPre=
    evil = tmp_path / "proj\n[program:evil]\ncommand=touch owned\nExecStartPre=sh"
    evil.mkdir()
    plain = tmp_path / "pct%h dir"  # systemd would read %h as the user's home
    plain.mkdir()
    env = squad_env()

    def deploy(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PY, "-m", "squad", "deploy", *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=120, check=False)

    # When configs are written from it: refused, one line, exit 2, nothing written
    for args in (("supervisord", "-o", str(tmp_path / "sv.conf")), ("systemd", "-o", str(tmp_path / "units")),
                 ("supervisord",)):
        proc = deploy(*args, cwd=evil)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "control character" in proc.stderr and proc.stderr.count("\n") == 1 and "[program:" not in proc.stdout
    assert not (tmp_path / "sv.conf").exists() and not (tmp_path / "units").exists()
    # ... the same for a user name with a newline
    proc = deploy("systemd", "-o", str(tmp_path / "units"), "--user", "root\nExecStartPre=/bin/sh", cwd=plain)
    assert proc.returncode == 2 and "--user" in proc.stderr and not (tmp_path / "units").exists()

    # When a folder holds '%': the units double it, so systemd reads the folder's own name
    proc = deploy("systemd", "-o", str(tmp_path / "units"), "--user", "root", cwd=plain)
    assert proc.returncode == 0, proc.stderr
    unit = (tmp_path / "units" / "squad-worker.service").read_text()
    assert f"WorkingDirectory={tmp_path}/pct%%h dir" in unit.splitlines()
    analyze = shutil.which("systemd-analyze")
    if analyze:
        verified = subprocess.run([analyze, "verify", str(tmp_path / "units" / "squad-worker.service")],
                                  capture_output=True, text=True, timeout=60, check=False)
        assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr


def test_deploy_without_a_target_lists_the_targets() -> None:
    proc = run_cli("deploy")
    assert proc.returncode == 0, proc.stderr
    assert "supervisord" in proc.stdout and "systemd" in proc.stdout
