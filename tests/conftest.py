"""Shared fixtures: our own redis-server on a free port, PostgreSQL, real worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil
import pytest
import redis

from squad.ops.embedded_redis import EmbeddedRedis, free_port

if TYPE_CHECKING:
    from squad.core.cards import Status
    from squad.store.card_store import CardStore

ROOT = Path(__file__).resolve().parent.parent
AGENTS = ROOT / "tests" / "agents"
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1/test"


@dataclass
class RedisServer:
    """A redis-server process the tests own: they may stop and restart it."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    aof: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, *, aof: bool | None = None) -> None:
        if aof is not None:
            self.aof = aof
        server = EmbeddedRedis(self.workdir, self.port, aof=self.aof, appendfsync="always")
        server.start()
        self.proc = server.proc

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        self.proc.wait(timeout=15)
        self.proc = None

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(port=self.port, db=db, decode_responses=True, socket_timeout=5)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A flushed Redis for this test (restarted if an earlier test left it stopped)."""
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


def status_of(store: CardStore, card_id: str) -> Status:
    """A card's status in the store now."""
    return store.get_card(card_id).status


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test starts with no SQUAD_* settings and its own working directory."""
    for key in list(os.environ):
        if (key.startswith("SQUAD_") and key != "SQUAD_TEST_DATABASE_URL") or key == "USE_CELERY":
            monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SQUAD_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))


def redis_keys(database_url: str) -> Any:
    """The Redis names of the store at this URL (`squad:<instance id>:...`)."""
    from squad.store.card_store import CardStore

    store = CardStore(database_url)
    try:
        return store.redis_keys
    finally:
        store.dispose()


def squad_env(**values: str) -> dict[str, str]:
    """The current environment plus SQUAD settings, for subprocesses."""
    env = dict(os.environ)
    env.update(values)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m squad ARGS` as a real subprocess."""
    return subprocess.run([sys.executable, "-m", "squad", *args], capture_output=True, text=True,
                          env=env or dict(os.environ), timeout=timeout, input=input, check=False)


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli


def kill_tree(proc: subprocess.Popen[bytes] | subprocess.Popen[str], sig: int = signal.SIGTERM,
              timeout: float = 20) -> None:
    """End a process and every descendant (SIGKILL after `timeout`)."""
    try:
        parent = psutil.Process(proc.pid)
        children = parent.children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    try:
        proc.send_signal(sig)
        proc.wait(timeout=timeout)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        proc.kill()
        proc.wait(timeout=10)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def alive(pid: int) -> bool:
    """Running and not a zombie (a zombie counts as dead: this container's init never reaps orphans)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def read_pid(path: Path, timeout: float = 60) -> int:
    """The pid a fake agent wrote to `path` (written whole: the agents rename a finished file)."""
    wait_for(path.exists, timeout, interval=0.02, message=f"pid file {path}")
    return int(path.read_text())


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


def make_repo(path: Path) -> str:
    """A git repository with one commit on main; returns that commit."""
    from squad.attempt.workspaces import git

    path.mkdir(parents=True)
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "dev@example.com"],
                 ["config", "user.name", "Dev"]):
        git(args, path)
    (path / "README.md").write_text("hello\n", encoding="utf-8")
    git(["add", "-A"], path)
    git(["commit", "-q", "-m", "initial"], path)
    return git(["rev-parse", "HEAD"], path).strip()


def api_answers(base: str, statuses: tuple[int, ...] = (200,)) -> bool:
    """True when the API at `base` answers `/health` with one of `statuses`."""
    try:
        return httpx.get(f"{base}/health", timeout=5).status_code in statuses
    except httpx.HTTPError:
        return False


def ignore_sigint() -> None:
    """preexec_fn: start like a background job of a shell without job control (SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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


@dataclass
class Worker:
    """A real `squad worker` (supervised Celery worker) subprocess."""

    proc: subprocess.Popen[bytes]
    hostname: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def celery_children(self) -> list[psutil.Process]:
        return [p for p in psutil.Process(self.proc.pid).children(recursive=True)
                if "celery" in " ".join(p.cmdline())]


def wait_for(predicate: Callable[[], object], timeout: float = 60, interval: float = 0.1,
             message: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Factory: start `squad worker` subprocesses that are stopped (with their agents) after the test."""
    workers: list[Worker] = []

    def start(env: dict[str, str], *, concurrency: int = 2, name: str | None = None,
              queues: str = "cards,maintenance", extra: list[str] | None = None,
              wait_ready: bool = True) -> Worker:
        hostname = name or f"w{len(workers)}-{uuid.uuid4().hex[:6]}@test"
        log_path = tmp_path / f"worker-{len(workers)}.log"
        out = open(log_path, "wb")  # noqa: SIM115 - kept open for the process lifetime
        proc = subprocess.Popen(
            [sys.executable, "-m", "squad", "worker", "--concurrency", str(concurrency), "--hostname", hostname,
             "--queues", queues, "--loglevel", "INFO", *(extra or [])],
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
    from apiserver import run_api  # tests/integration/apiserver.py

    with run_api(settings) as server:
        yield server
