"""Dashboard: time to first render of the board, and main-thread time per 100 progress events,
with 2,000 cards against a baseline of 20 cards in the same run.

Run: `python bench/dashboard.py [--cards 2000] [--baseline 20] [--rounds 5] [--events 100]`.

A private redis-server and a SQLite store in a temporary directory; the real `python -m squad
serve` in its own process; Debian's Chromium (`/usr/bin/chromium`) driven by Playwright. Cards are
written straight into the store in every status (half settled, with runs and costs, 40 running).

- **First render**: a fresh page, from navigation start to the board drawn (the page marks
  `body[data-loaded]` after reading every card from `/api/board`, rendering every lane and applying
  buffered events) plus the next frame, read with `performance.now()` in the page.
  The time is split into the board fetch (`GET /api/board`, every page: server work and transfer)
  and what the page does after it (parse, render the lanes, paint).
- **Events**: 100 `progress` events for the running cards, XADDed in one burst to the event
  stream the page follows; main-thread time is Chromium's `TaskDuration` (CDP
  `Performance.getMetrics`) over a 2-second window after the burst, minus the same window measured
  just before with no events (the page's 1-second clock ticks in both).
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
from typing import Any

# src first, before _common imports squad: the seed and the server run the same code
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).parent))
from _common import free_port, start_redis, table

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RUNNING = 40
SQUADS = ["backend", "frontend", "platform", "data", "qa", "docs"]
AGENTS = ["claude", "codex", "aider"]
VERBS = ["Add", "Fix", "Refactor", "Document", "Test", "Speed up", "Remove", "Migrate"]
THINGS = ["login form", "billing webhook", "search index", "rate limiter", "CSV export", "audit log",
          "session cache", "feature flags", "retry policy", "upload widget", "SSO callback", "API pagination"]


def seed(db_url: str, cards: int) -> list[str]:
    """`cards` cards in every status, written directly (a benchmark needs the shape, not the path)."""
    from squad.core.cards import CardSpec
    from squad.store.card_store import CardStore
    from squad.store.tables import cards as cards_t
    from squad.store.tables import runs as runs_t

    store = CardStore(db_url)
    store.add_cards([CardSpec(card_id=f"D-{i:05d}", title=f"{VERBS[i % len(VERBS)]} {THINGS[i % len(THINGS)]}",
                              squad=SQUADS[i % len(SQUADS)], agent=AGENTS[i % len(AGENTS)],
                              priority=(i * 7) % 10, labels=["bench"]) for i in range(cards)])
    now = time.time()
    running = min(RUNNING, cards)
    plan = (["IN_PROGRESS"] * running + ["FAILED", "RETRYING", "CANCELLED", "QUEUED", "TODO", "BLOCKED"]
            + ["DONE"] * 6)
    statuses = {f"D-{i:05d}": plan[i] if i < running else plan[running + (i - running) % (len(plan) - running)]
                for i in range(cards)}
    runs: list[dict[str, Any]] = []
    with store.engine.begin() as conn:
        for card_id, status in statuses.items():
            n = int(card_id[2:])
            values: dict[str, Any] = {"status": status}
            if status in ("IN_PROGRESS", "DONE", "FAILED", "RETRYING", "CANCELLED"):
                ended = now - (n % 1440) * 60
                started = ended - 30 - n % 300
                attempts = 2 if status in ("FAILED", "RETRYING") else 1
                values.update(attempts=attempts, celery_task_id=f"t-{card_id}", cost_usd=0.05 * (1 + n % 9),
                              progress=100 if status == "DONE" else 30 + n % 60, current_step="agent executing")
                if status == "IN_PROGRESS":
                    values.update(claim_token=f"c-{card_id}", claimed_by=f"worker-{n % 4}@bench",
                                  lease_expires_at=now + 3600)
                if status == "RETRYING":
                    values["next_attempt_at"] = now + 60 + n % 600
                if status in ("FAILED", "RETRYING"):
                    values["last_error"] = "exit code 1: tests failed"
                for attempt in range(1, attempts + 1):
                    open_run = status == "IN_PROGRESS"
                    outcome = {"DONE": "succeeded", "CANCELLED": "cancelled"}.get(status, "failed")
                    runs.append({"card_id": card_id, "attempt": attempt, "task_id": f"t-{card_id}",
                                 "worker": f"worker-{n % 4}@bench", "status": "running" if open_run else outcome,
                                 "queued_at": started - 5, "started_at": now - 20 if open_run else started,
                                 "ended_at": None if open_run else ended, "exit_code": None if open_run else 1,
                                 "cost_usd": 0.05 * (1 + n % 9), "log": "bench"})
            conn.execute(cards_t.update().where(cards_t.c.card_id == card_id).values(**values))
        if runs:
            conn.execute(runs_t.insert(), runs)
    store.dispose()
    return [cid for cid, st in statuses.items() if st == "IN_PROGRESS"]


def start_server(tmp: Path, redis_url: str, db_url: str) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    env = dict(os.environ, SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=db_url, SQUAD_WORKDIR=str(tmp / "work"),
               PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "squad", "serve", "--port", str(port)], cwd=tmp, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/openapi.json", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("squad serve did not start")


FIRST_RENDER_JS = """() => new Promise((resolve) => {
  const done = () => requestAnimationFrame(() => setTimeout(() => resolve(performance.now()), 0));
  if (document.body.dataset.loaded) done();
  else new MutationObserver((_, obs) => { if (document.body.dataset.loaded) { obs.disconnect(); done(); } })
    .observe(document.body, {attributes: true});
})"""


def task_duration_s(cdp: Any) -> float:
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return float(metrics["TaskDuration"])


def measure(browser: Any, url: str, redis_url: str, db_url: str, running: list[str], cards: int, rounds: int,
            events: int, window_s: float) -> dict[str, list[float]]:
    """Per round: first render, its board fetch and in-page parts (ms), and main-thread ms per burst."""
    from squad.live.events import EventBus, progress_event
    from squad.store.card_store import CardStore

    store = CardStore(db_url)
    bus = EventBus(redis_url + "/2", store.redis_keys)
    store.dispose()
    out: dict[str, list[float]] = {"render": [], "fetch": [], "page": [], "events": []}
    for r in range(rounds):
        context = browser.new_context(viewport={"width": 1600, "height": 900})
        page = context.new_page()
        page.goto(url)
        out["render"].append(page.evaluate(FIRST_RENDER_JS))
        timing = page.evaluate("window.__squad.timing")
        if page.evaluate("window.__squad.state.cards.size") != cards:
            raise SystemExit("the board does not hold every card")
        out["fetch"].append(timing["fetched"] - timing["start"])
        out["page"].append(out["render"][-1] - timing["fetched"])
        page.wait_for_selector('#conn[data-state="live"]')
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable")
        time.sleep(0.5)
        # The same wall-clock window twice: without events, then with one burst (nothing else
        # talks to the page meanwhile; the page's 1-second clock ticks in both).
        before = task_duration_s(cdp)
        time.sleep(window_s)
        idle_s = task_duration_s(cdp) - before
        batch = [progress_event(running[i % len(running)], f"t-{running[i % len(running)]}",
                                progress=30 + (i + r) % 60, current_step=f"step {i}", elapsed=1.0 + i,
                                worker="worker-0@bench", event_id=f"bench:{r}:{i}")
                 for i in range(events)]
        before = task_duration_s(cdp)
        last_id = bus.publish_many(batch)
        time.sleep(window_s)
        busy_s = task_duration_s(cdp) - before
        if page.evaluate("window.__squad.state.lastId") != last_id:
            raise SystemExit(f"the burst was not applied within {window_s} s; raise --window")
        out["events"].append(max(0.0, busy_s - idle_s) * 1000)
        context.close()
    bus.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cards", type=int, default=2000)
    parser.add_argument("--baseline", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--window", type=float, default=2.0, help="seconds measured per burst")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    results: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmpdir, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for cards in (args.baseline, args.cards):
            tmp = Path(tmpdir) / f"n{cards}"
            tmp.mkdir()
            redis_proc, redis_url = start_redis(tmp / "redis")
            db_url = f"sqlite:///{tmp / 'squad.db'}"
            server = None
            try:
                running = seed(db_url, cards)
                server, url = start_server(tmp, redis_url, db_url)
                got = measure(browser, url, redis_url, db_url, running, cards, args.rounds, args.events, args.window)
            finally:
                if server is not None:
                    server.terminate()
                    server.wait(timeout=20)
                redis_proc.terminate()
                redis_proc.wait(timeout=20)
            med = {k: statistics.median(v) for k, v in got.items()}
            results.append([f"{cards:,}", f"{med['render']:.0f} ms ({min(got['render']):.0f}-{max(got['render']):.0f})",
                            f"{med['fetch']:.0f} ms", f"{med['page']:.0f} ms",
                            f"{med['events']:.1f} ms ({min(got['events']):.1f}-{max(got['events']):.1f})"])
        browser.close()
    print(f"Dashboard, {args.rounds} rounds each: median (range); {args.events} progress events per burst")
    print(table(["cards on the board", "first render", "of which: board fetch", "page work after the fetch",
                 f"main thread per {args.events} events"], results))


if __name__ == "__main__":
    main()
