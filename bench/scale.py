"""Orchestrator and import cost as the store grows: 1k / 10k (/ 100k with --big) cards, SQLite and PostgreSQL.

Per store size and database, in one run:
- import: `store.add_cards()` of N cards (what `squad backlog import` does after parsing) against
  the floor of raw sqlite3 `executemany` of the same rows (SQLite only);
- history: N cards DONE except 10 TODO waiting on 1 IN_PROGRESS card (what a long-lived store
  looks like); backlog: N TODO cards all waiting on 1 IN_PROGRESS card. For each, orchestrator
  passes (`tick()`) with nothing to release: the first one (it reads every waiting card), passes
  while the setup's writes are younger than the look-back window (`squad.orchestration.pass_graph.LOOKBACK_S`:
  they are read again, narrowly), and passes after it (the steady state: nothing changed);
- release: N TODO cards without dependencies, one pass queues them all through a real Celery
  producer into a private redis-server (cards/s).
Figures are min / median / max of --rounds passes (import and release: of --rounds fresh stores).
Run: `python bench/scale.py [--sizes 1000,10000] [--big] [--pg-url URL] [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from _common import start_redis, table

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1/test"


class NullDispatcher:
    """Counts what a pass would send (the pass itself is what is measured)."""

    mode = "celery"

    def __init__(self) -> None:
        self.sent = 0

    def dispatch(self, card_id: str, task_id: str, priority: int, soft: float, hard: float) -> None:
        self.sent += 1

    def live_task_ids(self, task_ids: list[str]) -> set[str]:
        return set(task_ids)

    def close(self) -> None:
        return None


def quiet_service_logging() -> None:
    """Log as `squad orchestrate` does (INFO, JSON lines: each queued card writes one), into /dev/null."""
    import logging

    from squad.core.logconfig import configure_logging

    configure_logging("INFO", json_lines=True)
    logging.getLogger().handlers[0].setStream(open(os.devnull, "w"))  # noqa: SIM115 (lives as long as the process)


def mmm(values: list[float], unit: str = "") -> str:
    v = sorted(values)
    return f"{v[0]:.1f} / {statistics.median(v):.1f} / {v[-1]:.1f}{unit}"


def fresh_url(kind: str, tmp: Path, pg_url: str) -> tuple[str, object]:
    """A new empty database; returns (url, cleanup handle)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp / f'scale-{uuid.uuid4().hex[:8]}.db'}", None
    import sqlalchemy as sa

    name = f"squad_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    return pg_url.rsplit("/", 1)[0] + f"/{name}", (admin, name)


def drop(handle: object) -> None:
    if handle is None:
        return
    admin, name = handle  # type: ignore[misc]
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def specs_for(n: int, depends_on: str | None = None) -> list:  # type: ignore[type-arg]
    from squad.core.cards import CardSpec

    return [CardSpec(card_id=f"S{i}", title=f"card {i}", depends_on=[depends_on] if depends_on else [])
            for i in range(n)]


def raw_sqlite_floor(specs: list, tmp: Path) -> float:  # type: ignore[type-arg]
    """ms to executemany the same rows with the sqlite3 module (WAL, one transaction)."""
    from squad.store.card_store import CardStore

    url = f"sqlite:///{tmp / f'raw-{uuid.uuid4().hex[:8]}.db'}"
    CardStore(url).dispose()  # the same schema
    db = sqlite3.connect(url.removeprefix("sqlite:///"))
    db.execute("PRAGMA journal_mode=WAL")
    fixed = {"status": "TODO", "attempts": 0, "progress": 0, "created_at": time.time(),
             "updated_at": time.time(), "cost_usd": 0.0}
    dicts = [{**s.model_dump(), **fixed} for s in specs]
    cols = list(dicts[0])
    rows = [tuple(json.dumps(v) if isinstance(v, list | dict) else v for v in d.values()) for d in dicts]
    start = time.perf_counter()
    with db:
        db.executemany(f"INSERT INTO cards ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)
    elapsed = (time.perf_counter() - start) * 1000
    db.close()
    return elapsed


def store_with(url: str, n: int, scenario: str):  # type: ignore[no-untyped-def]
    """A store of n cards in the given scenario; returns it."""
    from sqlalchemy import update

    from squad.store.card_store import CardStore
    from squad.store.tables import cards

    store = CardStore(url)
    if scenario == "release":
        store.add_cards(specs_for(n))
        return store
    store.add_cards([specs_for(1)[0].model_copy(update={"card_id": "RUNNING"})])
    waiting = specs_for(n, depends_on="RUNNING")
    store.add_cards(waiting)
    with store.tx() as conn:
        conn.execute(update(cards).where(cards.c.card_id == "RUNNING").values(status="IN_PROGRESS",
                                                                              lease_expires_at=time.time() + 3600))
        if scenario == "history":
            conn.execute(update(cards).where(cards.c.card_id.not_in(["RUNNING", *[f"S{i}" for i in range(10)]]))
                         .values(status="DONE"))
    if store.engine.dialect.name == "postgresql":  # what autovacuum does within a minute of a bulk write
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE cards")
    return store


def passes(orch, count: int) -> list[float]:  # type: ignore[no-untyped-def]
    """ms of `count` passes with nothing to release."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        res = orch.tick()
        times.append((time.perf_counter() - start) * 1000)
        assert not res.released
    return times


def bench_size(kind: str, n: int, rounds: int, tmp: Path, pg_url: str, redis_url: str) -> list[list[str]]:
    from squad.core.settings import load_settings
    from squad.orchestration.orchestrator import CeleryDispatcher, Orchestrator
    from squad.orchestration.pass_graph import LOOKBACK_S

    rows: list[list[str]] = []
    settings = load_settings(redis_url=redis_url)
    # import
    imports, floors = [], []
    for _ in range(rounds):
        url, handle = fresh_url(kind, tmp, pg_url)
        from squad.store.card_store import CardStore

        store = CardStore(url)
        specs = specs_for(n)
        start = time.perf_counter()
        store.add_cards(specs)
        imports.append((time.perf_counter() - start) * 1000)
        store.dispose()
        drop(handle)
        if kind == "sqlite":
            floors.append(raw_sqlite_floor(specs, tmp))
    ratio = f"{statistics.median(imports) / statistics.median(floors):.1f}x raw sqlite3" if floors else ""
    rows.append([f"{kind} {n}", "import (ms)", mmm(imports), mmm(floors) if floors else "", ratio])
    # passes with nothing to release
    for scenario in ("history", "backlog"):
        url, handle = fresh_url(kind, tmp, pg_url)
        store = store_with(url, n, scenario)
        written = time.time()
        orch = Orchestrator(settings, store, NullDispatcher())  # type: ignore[arg-type]
        start = time.perf_counter()
        orch.tick()  # the first pass reads every waiting card (and warms connections)
        first = (time.perf_counter() - start) * 1000
        recent = passes(orch, max(rounds, 5))  # the setup's rows are still inside the look-back window
        time.sleep(max(0.0, written + LOOKBACK_S - time.time()))
        recent += passes(orch, 1)  # the last pass whose window (from the previous pass's start) holds them
        steady = passes(orch, max(rounds, 5))
        rows.append([f"{kind} {n}", f"{scenario}: first pass, full read (ms)", mmm([first]), "", ""])
        rows.append([f"{kind} {n}", f"{scenario}: pass, writes < {LOOKBACK_S:.0f} s old (ms)", mmm(recent), "", ""])
        rows.append([f"{kind} {n}", f"{scenario}: pass (ms)", mmm(steady), "", ""])
        store.dispose()
        drop(handle)
    # release through a real Celery producer
    rates = []
    for _ in range(rounds):
        url, handle = fresh_url(kind, tmp, pg_url)
        store = store_with(url, n, "release")
        dispatcher = CeleryDispatcher(settings)
        orch = Orchestrator(settings, store, dispatcher)
        start = time.perf_counter()
        res = orch.tick()
        rates.append(len(res.released) / (time.perf_counter() - start))
        assert len(res.released) == n
        dispatcher.close()
        store.dispose()
        drop(handle)
        import redis

        redis.Redis.from_url(redis_url).flushall()
    rows.append([f"{kind} {n}", "release all (cards/s)", mmm(rates), "", ""])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--big", action="store_true", help="add 100,000 cards (several minutes on 2 shared cores)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pg-url", default=os.environ.get("SQUAD_TEST_DATABASE_URL", PG_DEFAULT))
    ap.add_argument("--no-pg", action="store_true")
    args = ap.parse_args()
    quiet_service_logging()
    sizes = [int(s) for s in args.sizes.split(",")] + ([100_000] if args.big else [])
    kinds = ["sqlite"] + ([] if args.no_pg else ["postgresql"])
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        redis_proc, redis_url = start_redis(tmp / "redis")
        try:
            for n in sizes:
                for kind in kinds:
                    rows += bench_size(kind, n, args.rounds, tmp, args.pg_url, redis_url)
                    print(table(["store", "measure", "min / median / max", "baseline", "ratio"], rows[-8:]),
                          flush=True)
        finally:
            redis_proc.terminate()
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print(table(["store", "measure", "min / median / max", "baseline", "ratio"], rows))


if __name__ == "__main__":
    main()
