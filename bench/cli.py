"""Whole-process time of CLI commands against `python -c pass`, in the same run, paired.

Each round runs the baseline and every command once, in turn (A B A B ...), so a machine that
gets busier slows both; the ratio is taken per round. `card list` runs on a SQLite store of
--cards cards (default 20,000): the default page of 100, and `--all --json` for comparison.
`status` runs twice: with no Redis (connection refused) and with a private redis-server and no
worker (no Celery ping can be answered).
Run: `python bench/cli.py [--rounds 7] [--cards 20000]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from _common import start_redis, table

ROOT = Path(__file__).resolve().parent.parent


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--cards", type=int, default=20_000)
    args = ap.parse_args()
    from squad.cards import CardSpec
    from squad.store import CardStore

    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        db = f"sqlite:///{work / 'squad.db'}"
        store = CardStore(db)
        store.add_cards([CardSpec(card_id=f"C{i}", title=f"card number {i}") for i in range(args.cards)])
        store.dispose()
        redis_proc, redis_url = start_redis(work / "redis")
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SQUAD_DATABASE_URL": db,
               "SQUAD_REDIS_URL": "redis://127.0.0.1:1"}  # no Redis: status probes fail fast
        py = [sys.executable, "-m", "squad"]
        commands = {
            "python -c pass (baseline)": [sys.executable, "-c", "pass"],
            "squad --help": [*py, "--help"],
            "squad version": [*py, "version"],
            f"squad card list ({args.cards} cards, page of 100)": [*py, "card", "list"],
            f"squad card list --all --json ({args.cards} cards)": [*py, "card", "list", "--all", "--json"],
            "squad status (no Redis)": [*py, "status"],
            "squad status (Redis, no worker)": [*py, "status"],
        }
        envs = {name: env for name in commands}
        envs["squad status (Redis, no worker)"] = {**env, "SQUAD_REDIS_URL": redis_url}
        times: dict[str, list[float]] = {name: [] for name in commands}
        print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
        try:
            for name, argv in commands.items():
                timed(argv, envs[name], work)  # warm-up: page cache, .pyc files
            for _ in range(args.rounds):
                for name, argv in commands.items():
                    times[name].append(timed(argv, envs[name], work))
        finally:
            redis_proc.terminate()
            redis_proc.wait()
        print(f"load average at end: {os.getloadavg()[0]:.2f}")
    base = times["python -c pass (baseline)"]
    rows = []
    for name, values in times.items():
        v = sorted(values)
        ratios = sorted(x / b for x, b in zip(values, base, strict=True))
        rows.append([name, f"{v[0]:.3f} / {statistics.median(v):.3f} / {v[-1]:.3f}",
                     f"{ratios[0]:.1f} / {statistics.median(ratios):.1f} / {ratios[-1]:.1f}"])
    print(table(["command", "seconds (min / median / max)", "x python -c pass (min / median / max)"], rows))


if __name__ == "__main__":
    main()
