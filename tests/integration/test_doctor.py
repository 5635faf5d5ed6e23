"""`squad doctor` against real Redis servers and real databases: what is right passes, what is wrong
is named with its fix and a non-zero exit code."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from squad.ops.embedded_redis import redis_binary
from squad.store.card_store import CardStore
from support.cli import run_cli, squad_env
from support.processes import free_port, kill_tree, wait_for
from support.repos import make_repo

StartRedis = Callable[..., str]


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[StartRedis]:
    """Factory: a redis-server of our own with the given config arguments."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> str:
        port = free_port()
        data = tmp_path / f"redis-{port}"
        data.mkdir()
        proc = subprocess.Popen([redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
                                 *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(proc)
        client = redis.Redis(port=port, socket_connect_timeout=1)

        def pings() -> bool:
            try:
                return bool(client.ping())
            except redis.AuthenticationError:  # up, with `--requirepass`
                return True
            except redis.RedisError:
                return False

        wait_for(pings, 15, message="redis-server")
        client.close()
        return f"redis://127.0.0.1:{port}"

    yield start
    for proc in procs:
        kill_tree(proc)


def doctor(env: dict[str, str]) -> tuple[int, dict[str, dict[str, object]]]:
    proc = run_cli("doctor", "--json", env=env)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, {c["name"]: c for c in json.loads(proc.stdout)}


def test_doctor_passes_a_right_setup_on_postgresql_and_reports_the_clock_skew(
        tmp_path: Path, pg_url: str, start_redis: StartRedis) -> None:
    # Given a migrated PostgreSQL store, a Redis with AOF and noeviction, and an installed agent
    CardStore(pg_url).dispose()
    url = start_redis("--appendonly", "yes", "--save", "", "--maxmemory", "64mb", "--maxmemory-policy", "noeviction")
    (tmp_path / "squad.toml").write_text(f'default_agent = "py"\n[agents.py]\ncommand = ["{sys.executable}"]\n')
    # When the doctor runs
    code, checks = doctor(squad_env(SQUAD_REDIS_URL=url, SQUAD_DATABASE_URL=pg_url))
    # Expect every check ok and exit 0, the clock compared with PostgreSQL's
    assert code == 0, checks
    assert all(c["ok"] for c in checks.values())
    assert {"database", "schema", "redis", "redis persistence", "redis maxmemory", "redis maxmemory-policy",
            "visibility timeout", "agent py", "clock"} <= set(checks)
    assert "against the database" in str(checks["clock"]["detail"])
    assert "AOF" in str(checks["redis persistence"]["detail"])


def test_doctor_names_redis_and_agent_problems_with_their_fix_and_exits_non_zero(
        tmp_path: Path, start_redis: StartRedis) -> None:
    # Given a Redis without persistence that evicts keys and a default agent that is not installed
    url = start_redis("--appendonly", "no", "--save", "", "--maxmemory-policy", "allkeys-lru")
    db = f"sqlite:///{tmp_path / 'squad.db'}"
    CardStore(db).dispose()
    (tmp_path / "squad.toml").write_text('default_agent = "ghost"\n[agents.ghost]\ncommand = ["no-such-agent-bin"]\n')
    env = squad_env(SQUAD_REDIS_URL=url, SQUAD_DATABASE_URL=db)
    # When the doctor runs (text output, as an operator reads it)
    proc = run_cli("doctor", env=env)
    code, checks = doctor(env)
    # Expect exit 1 and each problem with what to do, the rest ok
    assert proc.returncode == 1 and code == 1
    assert "appendonly yes" in proc.stdout and "noeviction" in proc.stdout and "no-such-agent-bin" in proc.stdout
    assert not checks["redis persistence"]["ok"] and not checks["redis maxmemory-policy"]["ok"]
    assert not checks["agent ghost"]["ok"]
    assert checks["redis"]["ok"] and checks["database"]["ok"] and checks["schema"]["ok"]


def test_doctor_flags_a_redis_without_maxmemory_and_never_prints_a_part_of_a_password_holding_at(
        tmp_path: Path, start_redis: StartRedis) -> None:
    # Given a Redis without a memory limit whose password holds '@' and '#' (as people write them)
    password = "Xq7@Zk#Wm"
    url = start_redis("--appendonly", "yes", "--maxmemory", "0", "--maxmemory-policy", "noeviction",
                      "--requirepass", password)
    port = url.rsplit(":", 1)[1]
    db = f"sqlite:///{tmp_path / 'squad.db'}"
    CardStore(db).dispose()
    encoded = "Xq7%40Zk%23Wm"

    # When the doctor runs with the password percent-encoded: Redis is reached and the missing limit named
    code, checks = doctor(squad_env(SQUAD_REDIS_URL=f"redis://:{encoded}@127.0.0.1:{port}", SQUAD_DATABASE_URL=db))
    assert checks["redis"]["ok"], checks["redis"]
    assert not checks["redis maxmemory"]["ok"] and code == 1
    limit = checks["redis maxmemory"]
    assert "no limit" in str(limit["detail"]) and "maxmemory" in str(limit["fix"])

    # ... and with the password written raw, or wrong: no part of it in anything printed
    for raw in (f"redis://:{password}@127.0.0.1:{port}", f"redis://:Xq7@Zk#Wm-wrong@127.0.0.1:{port}/0",
                f"redis://:Xq7@Zk@127.0.0.1:{port}/0", f"redis://:Xq7@Zk/Wm@127.0.0.1:{port}/0"):
        proc = run_cli("doctor", env=squad_env(SQUAD_REDIS_URL=raw, SQUAD_DATABASE_URL=db))
        printed = proc.stdout + proc.stderr
        assert proc.returncode in (1, 2), printed
        assert not any(part in printed for part in ("Xq7", "Zk", "Wm")), printed
        if "#" in raw or "/Wm" in raw:  # a URL no client reads right: refused before any connection
            assert proc.returncode == 2 and "percent-encoded" in proc.stderr and proc.stderr.count("\n") == 1, printed


def test_doctor_flags_an_unmigrated_database_and_a_card_limit_above_the_visibility_timeout(
        tmp_path: Path, start_redis: StartRedis) -> None:
    # Given a store migrated to an older revision holding a card whose hard limit beats the visibility timeout
    url = start_redis("--appendonly", "yes", "--maxmemory-policy", "noeviction")
    db = f"sqlite:///{tmp_path / 'squad.db'}"
    store = CardStore(db)
    from squad.core.cards import parse_card

    store.add_cards([parse_card({"card_id": "LONG", "title": "long one", "time_limit": 5000})])
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
    store.dispose()
    env = squad_env(SQUAD_REDIS_URL=url, SQUAD_DATABASE_URL=db)
    # When the doctor runs
    code, checks = doctor(env)
    # Expect both named, with the fix, and the database left as it was (the doctor never migrates)
    assert code == 1
    assert not checks["schema"]["ok"] and "squad status" in str(checks["schema"]["fix"])
    assert not checks["visibility timeout"]["ok"] and "5000" in str(checks["visibility timeout"]["detail"])
    assert "SQUAD_VISIBILITY_TIMEOUT" in str(checks["visibility timeout"]["fix"])
    again = CardStore(db, migrate=False)
    with again.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0001"
    again.dispose()


def test_doctor_on_a_missing_sqlite_file_does_not_create_it(tmp_path: Path, start_redis: StartRedis) -> None:
    url = start_redis("--appendonly", "yes")
    db = tmp_path / "nowhere" / "squad.db"
    code, checks = doctor(squad_env(SQUAD_REDIS_URL=url, SQUAD_DATABASE_URL=f"sqlite:///{db}"))
    assert code == 1 and not checks["database"]["ok"]
    assert not db.exists()


def test_doctor_checks_the_workspace_repository_roots_git_and_base(tmp_path: Path, start_redis: StartRedis) -> None:
    # Given a migrated store, a right Redis, and `[workspace] repo` in four shapes
    url = start_redis("--appendonly", "yes", "--maxmemory", "64mb", "--maxmemory-policy", "noeviction")
    db = f"sqlite:///{tmp_path / 'squad.db'}"
    CardStore(db).dispose()
    inside, outside, plain = tmp_path / "src" / "app", tmp_path / "elsewhere" / "app", tmp_path / "src" / "plain"
    make_repo(inside)
    make_repo(outside)
    plain.mkdir(parents=True)
    env = squad_env(SQUAD_REDIS_URL=url, SQUAD_DATABASE_URL=db, SQUAD_ALLOWED_ROOTS=str(tmp_path / "src"))

    def workspace_checks(repo: Path, base: str | None = None) -> tuple[int, dict[str, dict[str, object]]]:
        toml = f'[workspace]\nrepo = "{repo}"\n' + (f'base = "{base}"\n' if base else "")
        (tmp_path / "squad.toml").write_text(toml)
        code, checks = doctor(env)
        return code, {name: c for name, c in checks.items() if name.startswith("workspace")}

    # Expect a repository inside the roots, with a base that exists, to pass
    code, checks = workspace_checks(inside, "main")
    assert code == 0 and all(c["ok"] for c in checks.values()) and set(checks) == {"workspace repo", "workspace base"}
    # ... one outside the allowed roots to fail, saying every card would fail and how to allow it
    code, checks = workspace_checks(outside)
    assert code == 1 and not checks["workspace repo"]["ok"]
    assert "outside the allowed roots" in str(checks["workspace repo"]["detail"])
    assert "SQUAD_ALLOWED_ROOTS" in str(checks["workspace repo"]["fix"])
    # ... a folder that is no git repository, and a base that names no commit, to fail
    code, checks = workspace_checks(plain)
    assert code == 1 and "not a git repository" in str(checks["workspace repo"]["detail"])
    code, checks = workspace_checks(inside, "no-such-branch")
    assert code == 1 and checks["workspace repo"]["ok"] and not checks["workspace base"]["ok"]
    # ... and the text output to name the problem with its fix
    (tmp_path / "squad.toml").write_text(f'[workspace]\nrepo = "{outside}"\n')
    text = run_cli("doctor", env=env)
    assert text.returncode == 1 and "outside the allowed roots" in text.stdout and "SQUAD_ALLOWED_ROOTS" in text.stdout


def test_doctor_says_which_sandbox_would_run_its_network_and_how_its_limits_bind(tmp_path: Path) -> None:
    # Given bwrap chosen with network "allow" to two patterns, one agent with a preset adding its
    # model's hosts, another with its network off, and a memory limit
    db = f"sqlite:///{tmp_path / 'squad.db'}"
    CardStore(db).dispose()
    env = squad_env(SQUAD_REDIS_URL=f"redis://127.0.0.1:{free_port()}", SQUAD_DATABASE_URL=db)
    (tmp_path / "squad.toml").write_text(f"""
default_agent = "claude"
[sandbox]
kind = "bwrap"
network = "allow"
allow_hosts = ["example.com", "*.pypi.org"]
memory_mb = 300
[agents.quick]
command = ["{sys.executable}"]
[agents.quick.sandbox]
network = "off"
""")
    # When the doctor runs (text and JSON)
    text = run_cli("doctor", env=env).stdout
    _code, checks = doctor(env)
    # Expect the kind and why, the probe's binary, the network with its hosts counted (each agent
    # that differs named), and how each limit binds here, set or not
    sandbox = checks["sandbox"]
    assert sandbox["ok"], sandbox
    detail = str(sandbox["detail"])
    assert detail.startswith("bwrap (chosen): probe passed (/"), detail
    assert "; network allow to 2 allow_hosts pattern(s); agent claude: network allow to 5 allow_hosts pattern(s); " \
           "agent quick: network off; " in detail, detail
    assert re.search(r"limits: memory_mb 300 by (cgroup v[12]|rlimit), pids unset \((cgroup v[12]|rlimit) here\), "
                     r"cpu unset \((cgroup v[12]|not limited) here\)$", detail), detail
    assert f"ok    sandbox: {detail}" in text, text
    # and bwrap chosen where it cannot run: a failure saying why, with the fix
    (tmp_path / "squad.toml").write_text('[sandbox]\nkind = "bwrap"\nbwrap = "/nonexistent/bwrap"\n')
    _code, checks = doctor(env)
    sandbox = checks["sandbox"]
    assert not sandbox["ok"] and "bwrap is not installed" in str(sandbox["detail"]), sandbox
    assert "install bubblewrap" in str(sandbox["fix"]), sandbox
