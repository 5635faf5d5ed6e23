"""Import: `squad backlog import` of N cards after reading the file, against raw sqlite3 of the same rows.

What is timed (each in a fresh process, so every measurement pays the same):
- squad: `squad.actions.backlog.add_cards(store, {"cards": [...]}, settings=..., events=EventBus)`, the
  whole path of an import once the file is parsed: validation of every card, the store's checks and
  the all-or-nothing insert into a fresh SQLite store (WAL), and the events that tell the dashboard and
  the orchestrators about the new cards, on a private redis-server;
- the floor: the same rows (already built, JSON lists already serialized) through the standard library's
  `sqlite3` `executemany` into the same schema, one transaction;
- with `--compare SRC`, the same squad path from another checkout's `src` (e.g. `git archive <commit> src`),
  in the same rounds.
The three alternate round by round; a ratio is taken per round (squad / floor), of the wall time
and of the measuring process's CPU time (steadier on a busy machine); the figures are min / median /
max over the rounds.
Run: `python bench/importing.py [--cards 20000] [--rounds 5] [--compare /path/to/old/src]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SRC = BENCH.parent / "src"
sys.path.insert(0, str(BENCH))

#: the child: builds the cards, times one path, prints milliseconds
CHILD = r"""
import json, sqlite3, sys, time
kind, db, redis_url, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cards = [{"card_id": f"IMP-{i}", "title": f"card {i}: do the thing",
          "description": "A description of the work, about one line of text long, as backlogs have.",
          "acceptance_criteria": ["it works", "it is tested"], "labels": ["bench"], "priority": i % 10,
          "depends_on": [f"IMP-{i - 1}"] if i % 10 else []} for i in range(n)]
from squad.store.card_store import CardStore
store = CardStore(f"sqlite:///{db}")  # the schema, created before the clock starts
if kind == "floor":
    store.dispose()
    now = time.time()
    fixed = {"status": "TODO", "attempts": 0, "progress": 0, "created_at": now, "updated_at": now, "cost_usd": 0.0}
    rows = [{**c, **fixed} for c in cards]
    cols = list(rows[0])
    values = [tuple(json.dumps(v) if isinstance(v, list) else v for v in r.values()) for r in rows]
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    start, cpu = time.perf_counter(), time.process_time()
    with conn:
        conn.executemany(f"INSERT INTO cards ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", values)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
else:
    from squad.actions.backlog import add_cards
    from squad.core.settings import load_settings
    from squad.live.events import EventBus
    settings = load_settings(database_url=f"sqlite:///{db}", redis_url=redis_url)
    bus = EventBus(redis_url, store.redis_keys)
    bus.ping()
    start, cpu = time.perf_counter(), time.process_time()
    done = add_cards(store, {"cards": cards}, settings=settings, events=bus)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert len(done.added) == n
print(elapsed * 1000, cpu * 1000)
"""


def run_child(kind: str, src: Path, db: Path, redis_url: str, n: int) -> tuple[float, float]:
    """(wall ms, CPU ms of the measuring process) of one measurement in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(db), redis_url, str(n)], env=env,
                         capture_output=True, text=True, check=True, timeout=600)
    wall, cpu = out.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def mmm(values: list[float], fmt: str = "{:.0f}") -> str:
    v = sorted(values)
    return " / ".join(fmt.format(x) for x in (v[0], statistics.median(v), v[-1]))


def main() -> None:
    from _common import start_redis, table

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cards", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--compare", type=Path, help="another checkout's src, run in the same rounds")
    args = ap.parse_args()
    paths = {"squad": SRC} | ({"compare": args.compare.resolve()} if args.compare else {})
    times: dict[str, list[float]] = {"floor": [], **{name: [] for name in paths}}
    cpus: dict[str, list[float]] = {"floor": [], **{name: [] for name in paths}}
    ratios: dict[str, list[float]] = {name: [] for name in paths}
    cpu_ratios: dict[str, list[float]] = {name: [] for name in paths}
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        redis_proc, redis_url = start_redis(tmp / "redis")
        try:
            for rnd in range(args.rounds):
                floor, floor_cpu = run_child("floor", SRC, tmp / f"floor-{rnd}.db", redis_url, args.cards)
                times["floor"].append(floor)
                cpus["floor"].append(floor_cpu)
                for name, src in paths.items():
                    ms, cpu = run_child("squad", src, tmp / f"{name}-{rnd}.db", redis_url, args.cards)
                    times[name].append(ms)
                    cpus[name].append(cpu)
                    ratios[name].append(ms / floor)
                    cpu_ratios[name].append(cpu / floor_cpu)
                print(f"round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:.0f} ms ({cpus[k][-1]:.0f} ms CPU)"
                                                        for k, v in times.items()), flush=True)
        finally:
            redis_proc.terminate()
            redis_proc.wait(10)
    rows = [["raw sqlite3 executemany (floor)", mmm(times["floor"]), "", mmm(cpus["floor"]), ""]]
    rows += [[f"squad add_cards ({name}: {paths[name]})", mmm(times[name]), mmm(ratios[name], "{:.1f}x"),
              mmm(cpus[name]), mmm(cpu_ratios[name], "{:.1f}x")] for name in paths]
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{args.cards} cards, {args.rounds} rounds")
    print(table(["path", "wall ms (min / median / max)", "x floor, per round", "CPU ms", "CPU x floor, per round"],
                rows))


if __name__ == "__main__":
    main()
