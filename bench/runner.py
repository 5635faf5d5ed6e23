"""Runner overhead in local mode: run_card() with a no-op agent against bare subprocess.run, same run.

Run: `python bench/runner.py [--cards 40] [--rounds 5] [--lines 100000]`.

1. Cards per second: every card is one full attempt through `run_card()` (claim with lease in SQLite,
   fixed progress steps, prompt rendering, working directory, agent `true` spawned in its own process
   group with the parent-death signal, archive, `finish`), one after another. The baseline is
   `subprocess.run(["true"])` the same number of times. Medians of several rounds; the overhead per
   card is median(run_card) - median(bare).
2. Log lines per second: an agent printing N short lines (tests/agents/lines.py) through `run_card()`
   (runner reads, parser, reporter, archive), against the same agent with its stdout read by
   `subprocess.run(capture_output=True)`.
No Redis (pure local mode); bench/logs.py measures the Redis log path.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import median, table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from squad.agents.parsers import make_parser  # noqa: E402
from squad.agents.runner import Limits, run_agent  # noqa: E402
from squad.attempt.run import AttemptContext, run_card  # noqa: E402
from squad.core.cards import CardSpec  # noqa: E402
from squad.core.settings import AgentConfig, Settings, load_settings  # noqa: E402
from squad.core.statuses import Status  # noqa: E402
from squad.store.card_store import CardStore  # noqa: E402

LINES_AGENT = ROOT / "tests" / "agents" / "lines.py"


def make_settings(tmp: Path) -> Settings:
    return load_settings(
        database_url=f"sqlite:///{tmp / 'bench.db'}", workdir=tmp / "work", use_celery=False,
        default_agent="noop", max_retries=0, stall_timeout=0,
        agents={"noop": AgentConfig(command=["true"], prompt="stdin", parser="plain"),
                "lines": AgentConfig(command=[sys.executable, str(LINES_AGENT), "{card_id}"], prompt="stdin",
                                     parser="markers")})


def run_cards(ctx: AttemptContext, prefix: str, count: int, agent: str | None = None,
              card_ids: list[str] | None = None) -> float:
    """Seconds to run `count` fresh cards one after another through run_card()."""
    ids = card_ids or [f"{prefix}-{i}" for i in range(count)]
    ctx.store.add_cards([CardSpec(card_id=i, title=f"bench {i}", agent=agent) for i in ids])
    tasks = {}
    for card_id in ids:
        tasks[card_id] = f"task-{card_id}"
        assert ctx.store.enqueue(card_id, tasks[card_id], expected=[Status.TODO])
    start = time.perf_counter()
    for card_id in ids:
        assert run_card(ctx, card_id, tasks[card_id]) == Status.DONE, ctx.store.get_card(card_id).last_error
    return time.perf_counter() - start


class _Quiet:
    """A runner observer that keeps nothing (the runner's own cost, without store or reporter)."""

    def on_line(self, level: str, message: str) -> None:
        return None

    def on_progress(self, progress: int, step: str) -> None:
        return None

    def stop_reason(self) -> str | None:
        return None


def runner_only(count: int, cwd: Path) -> float:
    """Seconds for `count` agents `true` through run_agent() alone (own group, PDEATHSIG, reader threads)."""
    limits = Limits(soft_time_limit_s=60, time_limit_s=90)
    start = time.perf_counter()
    for _ in range(count):
        result = run_agent(["true"], cwd=cwd, env={}, stdin_data=b"prompt", parser=make_parser("plain"),
                           limits=limits, observer=_Quiet())
        assert result.outcome == "succeeded", result.error
    return time.perf_counter() - start


def bare(count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        subprocess.run(["true"], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cards", type=int, default=40, help="cards per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lines", type=int, default=100_000, help="lines printed by the log agent")
    parser.add_argument("--log-rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="squad-bench-") as tmp_s:
        tmp = Path(tmp_s)
        os.chdir(tmp)  # no squad.toml of the caller's directory leaks in
        settings = make_settings(tmp)
        store = CardStore(settings.database_url)
        ctx = AttemptContext(settings=settings, store=store, events=None, worker="bench")

        run_cards(ctx, "warmup", 5)
        bare(5)
        ours_per_card, runner_per_card, bare_per_card = [], [], []
        for r in range(args.rounds):  # interleaved so all three see the same machine load
            ours_per_card.append(run_cards(ctx, f"r{r}", args.cards) / args.cards)
            runner_per_card.append(runner_only(args.cards, tmp) / args.cards)
            bare_per_card.append(bare(args.cards) / args.cards)
        ours_ms, bare_ms = median(ours_per_card) * 1000, median(bare_per_card) * 1000
        runner_ms = median(runner_per_card) * 1000

        line_rates, bare_rates = [], []
        for r in range(args.log_rounds):
            card_id = f"L{r}"
            settings.agents["lines"] = AgentConfig(command=[sys.executable, str(LINES_AGENT), str(args.lines)],
                                                   prompt="stdin", parser="markers")
            elapsed = run_cards(ctx, "lines", 1, agent="lines", card_ids=[card_id])
            line_rates.append(args.lines / elapsed)
            start = time.perf_counter()
            subprocess.run([sys.executable, str(LINES_AGENT), str(args.lines)], capture_output=True, check=True)
            bare_rates.append(args.lines / (time.perf_counter() - start))
        store.dispose()

    print(f"runner overhead, local mode: {args.rounds} rounds x {args.cards} cards (medians), "
          f"log agent: {args.lines} lines x {args.log_rounds} rounds\n")
    print(table(
        ["measure", "squad run_card()", "bare subprocess", "ratio", "overhead"],
        [
            ["ms per card (agent `true`)", f"{ours_ms:.1f}", f"{bare_ms:.1f}", f"{ours_ms / bare_ms:.1f}x",
             f"{ours_ms - bare_ms:+.1f} ms/card"],
            ["  of which run_agent() alone", f"{runner_ms:.1f}", f"{bare_ms:.1f}", f"{runner_ms / bare_ms:.1f}x",
             f"{runner_ms - bare_ms:+.1f} ms/card"],
            ["  of which store, steps, prompt", f"{ours_ms - runner_ms:.1f}", "", "", ""],
            ["cards per second", f"{1000 / ours_ms:.0f}", f"{1000 / bare_ms:.0f}", "", ""],
            [f"log lines/s ({args.lines} lines)", f"{median(line_rates):,.0f}", f"{median(bare_rates):,.0f}",
             f"{median(bare_rates) / median(line_rates):.1f}x slower", ""],
        ]))
    print(f"\ngoal: overhead <= 20 ms per card over bare subprocess -> "
          f"{'met' if ours_ms - bare_ms <= 20 else 'NOT met'}")


if __name__ == "__main__":
    main()
