"""Output flood: 200 MB on stdout, a 50 MB line and binary garbage must neither grow the worker's
memory nor overflow the live log or the archive, and the card's outcome must stay right."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import redis

from squad.core.constants import ARCHIVE_MAX_BYTES, TASK_LOGS_MAXLEN
from squad.core.statuses import Status
from support.cli import orchestrator, squad_env
from support.fake_agents import write_agents
from support.paths import AGENTS
from support.reliability import record
from support.store import add_cards, open_store, redis_keys
from support.workers import StartWorker

pytestmark = pytest.mark.slow
PY = sys.executable
FLOOD_MB, LINE_MB = 200, 50
RSS_GROWTH_MAX_BYTES = 150 * 1024 * 1024  # the flood is 250 MB: memory must not follow it
MARKER_SLACK_BYTES = 1024


def _celery_rss(worker_pid: int) -> int:
    """Largest resident set among the worker's Celery processes (the pool process runs the card)."""
    best = 0
    for proc in psutil.Process(worker_pid).children(recursive=True):
        try:
            if "celery" in " ".join(proc.cmdline()):
                best = max(best, proc.memory_info().rss)
        except psutil.Error:
            continue
    return best


@pytest.mark.timeout(300)
def test_output_flood_keeps_worker_memory_and_logs_bounded(
        tmp_path: Path, redis_url: str, sqlite_url: str, start_worker: StartWorker) -> None:
    # Given an agent that writes 200 MB of lines, a 50 MB line and binary garbage, then succeeds
    write_agents(tmp_path, flood=[PY, str(AGENTS / "flood.py"), str(FLOOD_MB), str(LINE_MB)])
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url, SQUAD_MAX_RETRIES="0")
    worker = start_worker(env, concurrency=1, name="flood@test")
    baseline = _celery_rss(worker.proc.pid)
    peak = [baseline]
    live_peak = [0]
    stop = threading.Event()
    client = redis.Redis.from_url(f"{redis_url}/2")  # events and live logs live in DB 2

    def sample() -> None:
        while not stop.wait(0.2):
            peak[0] = max(peak[0], _celery_rss(worker.proc.pid))
            live_peak[0] = max(live_peak[0], int(client.xlen(redis_keys(sqlite_url).task_logs("FLOOD"))))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with open_store(sqlite_url) as store:
            add_cards(store, {"card_id": "FLOOD"})
            # When it runs to its end
            started = time.monotonic()
            with orchestrator(env, tmp_path / "orch.log", "--wait") as orch:
                code = orch.wait(timeout=240)
            elapsed = time.monotonic() - started
            runs = store.list_runs("FLOOD")
            archive = store.run_log(runs[-1].id)
            card = store.get_card("FLOOD")
    finally:
        stop.set()
        sampler.join(timeout=5)

    # Expect the card DONE, worker memory bounded, the live log and the archive within their caps
    assert code == 0 and card.status == Status.DONE, [(r.status, r.error) for r in runs]
    growth = peak[0] - baseline
    assert growth < RSS_GROWTH_MAX_BYTES, f"worker RSS grew by {growth / 2**20:.0f} MiB"
    live = live_peak[0]
    assert 0 < live <= TASK_LOGS_MAXLEN * 1.1, live
    assert len(archive.encode()) <= ARCHIVE_MAX_BYTES + MARKER_SLACK_BYTES
    lines = archive.splitlines()
    assert "flood starting" in lines[0] or any("flood starting" in x for x in lines[:5])
    assert any("flood done" in x for x in lines[-5:]), lines[-5:]  # the tail is kept
    assert any("cut" in x and x.startswith("[…") for x in lines)
    assert any("truncated" in x for x in lines[-10:]) or "truncated" in archive
    record(f"output flood ({FLOOD_MB} MB, a {LINE_MB} MB line, binary)", in_flight=1, done=1, lost=0, run_twice=0,
           orphans=0, recover_s=0.0,
           note=f"worker RSS +{growth / 2**20:.0f} MiB (baseline {baseline / 2**20:.0f} MiB); live log peak "
                f"{live} entries; archive {len(archive.encode()) / 2**20:.1f} MiB; ran {elapsed:.0f} s")
