"""Hop of a `depends_on` chain through squad workers vs a bare Celery `chain()`, in the same run.

A hop is the time from one card's start to the next one's start: (last end - first start) / N,
read from the run rows (squad) or from what each task recorded (Celery). Both sides run the
agent/command `true` on one worker process. squad's orchestrator runs with its default 1 s poll:
what the figure shows is how fast it reacts to a card settling, not its poll interval.
Run: `python bench/chain.py [--cards 20] [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).parent))
from _common import noop_project, start_redis, table
from throughput import ROOT, _stop, _worker


def bare_chain(url: str, cards: int, tmp: Path) -> float:
    """ms per hop of a Celery chain of `cards` tasks each running `true`."""
    env = {**os.environ, "BENCH_BROKER": url, "PYTHONPATH": f"{ROOT / 'bench'}:{ROOT / 'src'}"}
    proc = _worker([sys.executable, "-m", "celery", "-A", "baseline_app", "worker", "-c", "1",
                    "--loglevel", "INFO", "-n", "chain@%h"], env, tmp, tmp / "chain-baseline.log")
    try:
        os.environ["BENCH_BROKER"] = url
        import baseline_app
        from celery import chain

        counter = redis.Redis.from_url(f"{url}/3")
        counter.delete("baseline:chain")
        chain(*(baseline_app.chain_step.si() for _ in range(cards))).apply_async()
        deadline = time.monotonic() + 120
        while counter.llen("baseline:chain") < cards:
            if time.monotonic() > deadline:
                raise RuntimeError("the Celery chain did not finish")
            time.sleep(0.02)
        spans = [tuple(map(float, x.split())) for x in counter.lrange("baseline:chain", 0, -1)]
        return (max(e for _s, e in spans) - min(s for s, _e in spans)) / cards * 1000
    finally:
        _stop(proc)


def squad_chain(url: str, cards: int, tmp: Path, interval: float) -> float:
    """ms per hop of a chain of `cards` cards (each depends on the previous one) with agent `true`."""
    work, env = noop_project(tmp, url)
    backlog = {"cards": [{"card_id": f"c{i:03d}", "title": f"card {i}",
                          **({"depends_on": [f"c{i - 1:03d}"]} if i else {})} for i in range(cards)]}
    (work / "backlog.json").write_text(json.dumps(backlog))
    subprocess.run([sys.executable, "-m", "squad", "backlog", "import", "backlog.json"], env=env, cwd=work,
                   check=True, capture_output=True)
    redis.Redis.from_url(url).flushall()
    proc = _worker([sys.executable, "-m", "squad", "worker", "--concurrency", "1", "--hostname", "chain@%h",
                    "--queues", "cards"], env, work, work / "worker.log")
    try:
        subprocess.run([sys.executable, "-m", "squad", "orchestrate", "--once", "--wait", "--mode", "celery",
                        "--interval", str(interval)], env=env, cwd=work, check=True, capture_output=True,
                       timeout=cards * interval * 3 + 120)
    finally:
        _stop(proc)
    sys.path.insert(0, str(ROOT / "src"))
    from squad.store.card_store import CardStore

    store = CardStore(f"sqlite:///{work / 'squad.db'}")
    runs = [r for i in range(cards) for r in store.list_runs(f"c{i:03d}")]
    store.dispose()
    start = min(r.started_at.timestamp() for r in runs if r.started_at)
    end = max(r.ended_at.timestamp() for r in runs if r.ended_at)
    return (end - start) / cards * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cards", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--interval", type=float, default=1.0, help="orchestrator safety-net poll (s)")
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        redis_proc, url = start_redis(tmp / "redis")
        try:
            bare, ours = [], []
            for r in range(args.rounds):
                bare.append(bare_chain(url, args.cards, tmp))
                ours.append(squad_chain(url, args.cards, tmp, args.interval))
                print(f"round {r + 1}: Celery chain {bare[-1]:.1f} ms/hop, squad {ours[-1]:.1f} ms/hop", flush=True)
        finally:
            redis_proc.terminate()
    ratios = sorted(o / b for o, b in zip(ours, bare, strict=True))

    def mmm(values: list[float], fmt: str = "{:.1f}") -> str:
        v = sorted(values)
        return " / ".join(fmt.format(x) for x in (v[0], statistics.median(v), v[-1]))

    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print(table(["path", "ms per hop (min / median / max)"],
                [[f"bare Celery chain() of {args.cards} tasks running true", mmm(bare)],
                 [f"squad chain of {args.cards} cards (agent true, poll {args.interval:g} s)", mmm(ours)],
                 ["ratio squad / Celery (per round)", mmm(ratios)]]))


if __name__ == "__main__":
    main()
