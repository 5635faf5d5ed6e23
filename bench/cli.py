"""Whole-process time of CLI commands against `python -c pass`, in the same run, paired.

Each round runs the baseline and every command once, in turn (A B A B ...), so a machine that
gets busier slows both; the ratio is taken per round. `card list` runs on a SQLite store of
--cards cards (default 20,000): the default page of 100, and `--all --json` for comparison, and
on an empty store (the command's own start-up).
`status` runs twice: with no Redis (connection refused) and with a private redis-server and no
worker (no Celery ping can be answered).
`import floor` is a bare interpreter importing only the libraries a `card list` cannot start
without (SQLAlchemy with its SQLite dialect, pydantic-settings, Typer with its pydantic option
coercion): what any read-only command costs before squad's own code runs. `settings floor` is
importing squad's settings and loading them (pydantic-settings): what every command does first,
`squad status` included, which the entry point answers without Typer.
`--compare SRC` also runs every squad command from another checkout's `src` (e.g. a `git worktree`
of an older commit) in the same rounds, for a before/after at the same load.
`--only TEXT` keeps the commands whose name contains TEXT (and the two baselines).
Run: `python bench/cli.py [--rounds 7] [--cards 20000] [--compare /path/to/old/src] [--only status]`.
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
from _common import cached_bytecode, start_redis, table

ROOT = Path(__file__).resolve().parent.parent
#: The third-party imports of a read-only command (docs/benchmarks.md, "CLI").
IMPORT_FLOOR = "import sqlalchemy.dialects.sqlite, pydantic_settings, typer._adapters"
#: What every command does first, `squad status` included: pydantic-settings builds the settings
SETTINGS_FLOOR = "from squad.core.settings import load_settings; load_settings()"


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:  # a failing command is not a measurement
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    return elapsed


# Creates the store with the checkout that will read it (an older one may not know the newest migration).
MAKE_STORE = """
import sys
from squad.core.cards import CardSpec
from squad.store.card_store import CardStore
store = CardStore(sys.argv[1])
store.add_cards([CardSpec(card_id=f"C{i}", title=f"card number {i}") for i in range(int(sys.argv[2]))])
store.dispose()
"""


def make_store(src: Path, db: str, cards: int) -> None:
    subprocess.run([sys.executable, "-c", MAKE_STORE, db, str(cards)], env={**os.environ, "PYTHONPATH": str(src)},
                   check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--cards", type=int, default=20_000)
    ap.add_argument("--compare", type=Path, help="another checkout's src: its commands run in the same rounds")
    ap.add_argument("--only", help="run only the squad commands whose name contains this text")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        db = f"sqlite:///{work / 'squad.db'}"
        make_store(ROOT / "src", db, args.cards)
        redis_proc, redis_url = start_redis(work / "redis")
        # Bytecode cached as in an installed package (the warm-up writes it).
        env = cached_bytecode({**os.environ, "PYTHONPATH": str(ROOT / "src"), "SQUAD_DATABASE_URL": db,
                               "SQUAD_REDIS_URL": "redis://127.0.0.1:1"},  # no Redis: status probes fail fast
                              work / "pycache")
        py = [sys.executable, "-m", "squad"]
        commands = {
            "python -c pass (baseline)": [sys.executable, "-c", "pass"],
            "import floor: SQLAlchemy, pydantic-settings, Typer": [sys.executable, "-c", IMPORT_FLOOR],
            "settings floor: squad's Settings loaded": [sys.executable, "-c", SETTINGS_FLOOR],
            "squad --help": [*py, "--help"],
            "squad version": [*py, "version"],
            "squad card list (empty store)": [*py, "card", "list"],
            f"squad card list ({args.cards} cards, page of 100)": [*py, "card", "list"],
            f"squad card list --all --json ({args.cards} cards)": [*py, "card", "list", "--all", "--json"],
            "squad status (no Redis)": [*py, "status"],
            "squad status (Redis, no worker)": [*py, "status"],
        }
        if args.only:
            commands = {name: argv for name, argv in commands.items()
                        if not name.startswith("squad ") or args.only in name}
        empty = f"sqlite:///{work / 'empty.db'}"
        envs = {name: env for name in commands}
        envs["squad status (Redis, no worker)"] = {**env, "SQUAD_REDIS_URL": redis_url}
        envs["squad card list (empty store)"] = {**env, "SQUAD_DATABASE_URL": empty}
        envs = {name: envs[name] for name in commands}
        make_store(ROOT / "src", empty, 0)
        if args.compare:
            other_db, other_empty = f"sqlite:///{work / 'compare.db'}", f"sqlite:///{work / 'compare-empty.db'}"
            make_store(args.compare.resolve(), other_db, args.cards)
            make_store(args.compare.resolve(), other_empty, 0)
            for name in [n for n in commands if n.startswith("squad ")]:
                commands[f"{name} [compare]"] = commands[name]
                envs[f"{name} [compare]"] = {**envs[name], "PYTHONPATH": str(args.compare.resolve()),
                                             "SQUAD_DATABASE_URL": other_empty if "empty" in name else other_db}
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
        row = [name, f"{v[0]:.3f} / {statistics.median(v):.3f} / {v[-1]:.3f}",
               f"{ratios[0]:.1f} / {statistics.median(ratios):.1f} / {ratios[-1]:.1f}"]
        if args.compare:  # this checkout against the other, round by round
            other = times.get(f"{name} [compare]")
            row.append("" if other is None else
                       f"{statistics.median(x / o for x, o in zip(values, other, strict=True)):.2f}")
        rows.append(row)
    headers = ["command", "seconds (min / median / max)", "x python -c pass (min / median / max)"]
    print(table(headers + (["x compare, same round (median)"] if args.compare else []), rows))


if __name__ == "__main__":
    main()
