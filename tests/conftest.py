"""Shared fixtures: our own redis-server on a free port, PostgreSQL, real worker processes.

Only fixtures and what they need live here; the helpers tests call are in `support/`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from support.cli import ignore_sigint, run_cli
from support.paths import SRC
from support.processes import alive, kill_tree, wait_for
from support.redis_server import RedisServer
from support.workers import Worker

if TYPE_CHECKING:
    from squad.store.card_store import CardStore

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1/test"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A flushed Redis for this test (restarted if an earlier test left it stopped).

    kombu keeps process-wide connection and producer pools keyed by the broker URL, and an earlier
    test may have restarted this Redis (same port): each test starts with them empty, so no test
    inherits another's connections. (squad's own broadcasts never use them: `probe_connection` in
    squad.live.celery_control, tested after a restart by test_celery.)"""
    import kombu.pools

    kombu.pools.reset()
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.proc = None
        redis_server.start(aof=False)
    redis_server.client().flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def pg_base_url() -> str:
    return os.environ.get("SQUAD_TEST_DATABASE_URL", PG_DEFAULT)


@pytest.fixture
def pg_url(pg_base_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this test (fails, never skips, when PostgreSQL is missing)."""
    import sqlalchemy as sa

    name = f"squad_t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(pg_base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = pg_base_url.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'squad.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Run the test against both stores."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'squad.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(db_url: str) -> Iterator[CardStore]:
    """A store on `db_url` (the test runs on SQLite and on PostgreSQL), disposed after the test."""
    from squad.store.card_store import CardStore

    card_store = CardStore(db_url)
    yield card_store
    card_store.dispose()


def pytest_configure(config: pytest.Config) -> None:
    """Tests stop commands with SIGINT, as Ctrl-C does. A suite started in the background by a shell
    without job control inherits SIGINT ignored, and so would every command it starts (an ignored
    signal stays ignored across exec): Python then sets no KeyboardInterrupt handler, and a test that
    interrupts `squad watch` waited in vain. The suite's processes take SIGINT again."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test starts with no SQUAD_* settings and its own working directory."""
    for key in list(os.environ):
        if (key.startswith("SQUAD_") and key != "SQUAD_TEST_DATABASE_URL") or key == "USE_CELERY":
            monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SQUAD_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("PYTHONPATH", str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli


@pytest.fixture
def reaper() -> Iterator[list[int]]:
    """Pids a failing test might leave behind (e.g. a grandchild that ignores SIGTERM): killed after it."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[Any]]]:
    """Factory: start `python -m squad ARGS` subprocesses; each is ended with its descendants after
    the test, whether it passed or failed, so no test leaks a process."""
    procs: list[subprocess.Popen[Any]] = []

    def start(*args: str, env: dict[str, str] | None = None, stdout: Any = None, sigint_ignored: bool = False,
              **popen: Any) -> subprocess.Popen[Any]:
        popen.setdefault("stderr", subprocess.STDOUT if stdout is not None else None)
        proc = subprocess.Popen([sys.executable, "-m", "squad", *args], env=env or dict(os.environ),
                                stdout=stdout, preexec_fn=ignore_sigint if sigint_ignored else None, **popen)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            kill_tree(proc, timeout=10)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Factory: start `squad worker` subprocesses that are stopped (with their agents) after the test."""
    workers: list[Worker] = []

    def start(env: dict[str, str], *, concurrency: int = 2, name: str | None = None,
              queues: str | None = "cards,maintenance", extra: list[str] | None = None,
              wait_ready: bool = True) -> Worker:
        hostname = name or f"w{len(workers)}-{uuid.uuid4().hex[:6]}@test"
        log_path = tmp_path / f"worker-{len(workers)}.log"
        out = open(log_path, "wb")  # noqa: SIM115 - kept open for the process lifetime
        proc = subprocess.Popen(
            [sys.executable, "-m", "squad", "worker", "--concurrency", str(concurrency), "--hostname", hostname,
             *(["--queues", queues] if queues is not None else []),  # None: the worker's default
             "--loglevel", "INFO", *(extra or [])],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        worker = Worker(proc, hostname, log_path)
        workers.append(worker)
        if wait_ready:
            wait_for(lambda: "ready." in worker.log() or proc.poll() is not None, 90, message="worker ready")
            assert proc.poll() is None, worker.log()
        return worker

    yield start
    for w in workers:
        if w.proc.poll() is None:
            kill_tree(w.proc)
        try:
            os.killpg(w.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture
def settings(redis_url: str, sqlite_url: str) -> Any:
    """Settings on this test's Redis and SQLite store."""
    from squad.core.settings import load_settings

    return load_settings(redis_url=redis_url, database_url=sqlite_url)


@pytest.fixture
def api(settings: Any) -> Iterator[Any]:
    """A real uvicorn server (in a thread) serving create_app(settings), for the API tests."""
    from support.api import run_api

    with run_api(settings) as server:
        yield server
