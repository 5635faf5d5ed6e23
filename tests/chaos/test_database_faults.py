"""The database goes away while 10 cards run: PostgreSQL restarted (a private cluster), or the
SQLite file locked by another process past the busy timeout. No card lost, none run twice (the
agents' own ledger), no outcome lost, every process reconnects by itself, /health says so meanwhile."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from squad.core.statuses import Status
from squad.store.card_store import CardStore
from support.cli import orchestrator, squad_env
from support.fake_agents import read_ledger, write_agents
from support.paths import AGENTS
from support.pgcluster import PgCluster
from support.processes import free_port, leftovers, wait_for
from support.reliability import record
from support.store import add_cards, open_store
from support.workers import StartWorker

pytestmark = pytest.mark.slow
PY = sys.executable
CARDS = 10
LEASE_S = 5
FAULT_S = 10.0  # twice the lease: without care, every lease would be swept when the database returns


class Fault:
    """A database and a way to take it away and give it back."""

    url: str

    def down(self) -> None: ...
    def up(self) -> None: ...
    def close(self) -> None: ...


class PgRestart(Fault):
    def __init__(self) -> None:
        self.cluster = PgCluster.create()
        self.url = self.cluster.url

    def down(self) -> None:
        self.cluster.stop("fast")

    def up(self) -> None:
        self.cluster.start()

    def close(self) -> None:
        self.cluster.destroy()


class SqliteLock(Fault):
    """Another process holds the write lock of the store's file; busy timeout 1 s (in the URL)."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "squad.db"
        self.url = f"sqlite:///{self.db}?timeout=1"
        self.locker: subprocess.Popen[str] | None = None

    def down(self) -> None:
        code = ("import sqlite3, sys, time\n"
                "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                "c.execute('BEGIN IMMEDIATE')\nprint('locked', flush=True)\nsys.stdin.read()\n")
        self.locker = subprocess.Popen([PY, "-c", code, str(self.db)], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True)
        assert self.locker.stdout is not None and self.locker.stdout.readline().strip() == "locked"

    def up(self) -> None:
        if self.locker is not None:
            self.locker.kill()
            self.locker.wait(timeout=10)
            self.locker = None

    def close(self) -> None:
        self.up()


@pytest.fixture(params=["postgresql-restart", "sqlite-lock"])
def fault(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fault]:
    made: Fault = PgRestart() if request.param == "postgresql-restart" else SqliteLock(tmp_path)
    try:
        yield made
    finally:
        made.close()


def _health(base: str) -> dict[str, Any] | None:
    try:
        return dict(httpx.get(f"{base}/health", timeout=5).json())
    except (httpx.HTTPError, ValueError):
        return None


def _db_state(base: str) -> Callable[[], str | None]:
    def probe() -> str | None:
        body = _health(base)
        return None if body is None else str(body.get("database"))
    return probe


@pytest.mark.timeout(240)
def test_database_outage_with_ten_cards_in_flight_loses_nothing_and_runs_nothing_twice(
        fault: Fault, tmp_path: Path, redis_url: str, start_worker: StartWorker,
        spawn: Callable[..., subprocess.Popen[Any]]) -> None:
    # Given 10 cards of ~8 s (agents keeping a ledger), a 5 s lease, one worker of 10 slots, the
    # orchestrator (sweeper) and the API, all on the database under test
    ledger = tmp_path / "ledger.txt"
    write_agents(tmp_path, fake=[PY, str(AGENTS / "ledger_steps.py"), str(ledger), "16", "0.5"])
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=fault.url, SQUAD_LEASE_S=str(LEASE_S),
                    SQUAD_RETRY_BACKOFF="0.5", SQUAD_REQUEUE_AFTER="5")
    CardStore(fault.url).dispose()  # migrate once, before the processes start
    start_worker(env, concurrency=CARDS, name="dbfault@test")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(tmp_path / "api.log", "wb") as api_log:
        spawn("serve", "--port", str(port), env=env, stdout=api_log)
    wait_for(lambda: _db_state(base)() == "connected", 120, message="API up")
    ids = [f"DB-{i:02d}" for i in range(CARDS)]
    with open_store(fault.url) as store, orchestrator(env, tmp_path / "orch.log"):
        add_cards(store, *({"card_id": cid} for cid in ids))
        wait_for(lambda: len(read_ledger(ledger)) >= CARDS, 90, message="every agent started")
        in_flight = store.count_by_status()[Status.IN_PROGRESS]

        # When the database goes away for twice the lease while they run, then comes back
        fault.down()
        went_down = time.monotonic()
        try:
            wait_for(lambda: _db_state(base)() == "error", 15, interval=0.2, message="/health database: error")
            time.sleep(max(0.0, FAULT_S - (time.monotonic() - went_down)))
        finally:
            fault.up()
        back_at = time.monotonic()
        wait_for(lambda: _db_state(base)() == "connected", 30, interval=0.2, message="/health connected again")
        healthy_s = time.monotonic() - back_at
        wait_for(lambda: all(c.status == Status.DONE for c in store.get_cards(ids).values()), 120, interval=0.3,
                 message="every card DONE")
        settled_s = time.monotonic() - back_at
        runs = {cid: store.list_runs(cid) for cid in ids}

    # Expect every card done once: one start and one commit per card in the agents' own ledger,
    # one run per card that succeeded (the outcome recorded after the database came back)
    entries = read_ledger(ledger)
    starts = {cid: sum(1 for w, c, _a, _p in entries if w == "start" and c == cid) for cid in ids}
    done = {cid: sum(1 for w, c, _a, _p in entries if w == "commit" and c == cid) for cid in ids}
    assert starts == dict.fromkeys(ids, 1), entries
    assert done == dict.fromkeys(ids, 1), entries
    assert {cid: [(r.attempt, r.status) for r in rs] for cid, rs in runs.items()} == {
        cid: [(1, "succeeded")] for cid in ids}
    assert not [p for p in leftovers(tmp_path) if "ledger_steps.py" in p]
    record(f"database outage ({'PostgreSQL restart' if isinstance(fault, PgRestart) else 'SQLite locked'}, "
           f"{FAULT_S:.0f} s)", in_flight=in_flight, done=sum(done.values()), lost=0,
           run_twice=sum(1 for n in done.values() if n > 1), orphans=0, recover_s=settled_s,
           note=f"/health connected {healthy_s:.1f} s after")
