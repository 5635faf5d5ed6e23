"""Log lines per second: one agent printing N lines through run_card()'s log path vs raw pipelined XADD.

Run: `python bench/logs.py [--lines 200000] [--rounds 3]`.
Our path: agent stdout → runner → parser → reporter batches → one pipeline per batch with the lines
(`task:logs:<id>`) and their `log` events (`task_updates`). Baseline: the same lines XADDed to one
stream with a pipeline of 500 per round trip — the floor for getting lines into Redis at all.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).parent))
from _common import median, start_redis, table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def raw_xadd(url: str, lines: int) -> float:
    client = redis.Redis.from_url(f"{url}/2")
    start = time.perf_counter()
    with client.pipeline(transaction=False) as pipe:
        for i in range(lines):
            pipe.xadd("bench:raw", {"timestamp": "2026-01-01T00:00:00.000+00:00", "level": "INFO",
                                    "message": f"line {i} of the agent output, with some text", "task_id": "t"},
                      maxlen=20000, approximate=True)
            if i % 500 == 499:
                pipe.execute()
        pipe.execute()
    elapsed = time.perf_counter() - start
    client.delete("bench:raw")
    return lines / elapsed


def squad_path(url: str, lines: int, tmp: Path) -> float:
    from squad.attempt.run import AttemptContext, run_card
    from squad.core.cards import CardSpec
    from squad.core.settings import AgentConfig, load_settings
    from squad.core.statuses import Status
    from squad.live.events import EventBus
    from squad.store.card_store import CardStore

    agent = AgentConfig(command=[sys.executable, str(ROOT / "tests" / "agents" / "lines.py"), str(lines)],
                        prompt="arg", parser="markers")
    db = tmp / f"{uuid.uuid4().hex}.db"
    settings = load_settings(database_url=f"sqlite:///{db}", redis_url=url, agents={"lines": agent},
                             default_agent="lines", workdir=str(tmp / "work"))
    store = CardStore(settings.database_url)
    store.add_cards([CardSpec(card_id="logs", title="print lines")])
    task_id = str(uuid.uuid4())
    store.enqueue("logs", task_id, expected=[Status.TODO])
    ctx = AttemptContext(settings=settings, store=store, events=EventBus(settings.events, store.redis_keys))
    start = time.perf_counter()
    status = run_card(ctx, "logs", task_id)
    elapsed = time.perf_counter() - start
    assert status == Status.DONE, status
    got = ctx.events.redis.xlen(store.redis_keys.task_logs("logs")) if ctx.events else 0
    assert got > 0
    store.dispose()
    redis.Redis.from_url(f"{url}/2").flushdb()
    return lines / elapsed


def bare_agent(lines: int) -> float:
    import subprocess

    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "tests" / "agents" / "lines.py"), str(lines)],
                   stdout=subprocess.DEVNULL, check=True)
    return lines / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        proc, url = start_redis(tmp / "redis")
        try:
            raw, ours, agent = [], [], []
            for r in range(args.rounds):
                raw.append(raw_xadd(url, args.lines))
                ours.append(squad_path(url, args.lines, tmp))
                agent.append(bare_agent(args.lines))
                print(f"round {r + 1}: raw {raw[-1]:,.0f}/s squad {ours[-1]:,.0f}/s agent alone {agent[-1]:,.0f}/s",
                      flush=True)
        finally:
            proc.terminate()
    mr, mo, ma = median(raw), median(ours), median(agent)
    print(table(["path", "lines/s (median)", "note"],
                [["raw pipelined XADD (500/batch)", f"{mr:,.0f}", f"{args.lines:,} lines"],
                 ["agent → squad log path", f"{mo:,.0f}", "lines + log events, archived"],
                 ["agent alone (stdout to /dev/null)", f"{ma:,.0f}", "producer ceiling"],
                 ["ratio squad / raw XADD", f"{mo / mr:.2f}", f"{args.rounds} rounds"]]))


if __name__ == "__main__":
    main()
