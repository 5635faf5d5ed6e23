"""Storms: many things at once through the real API, workers and agents."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from squad.core.statuses import Status
from support.cli import orchestrator, squad_env
from support.fake_agents import write_agents
from support.processes import alive, free_port, host_pid, wait_for
from support.reliability import record
from support.store import add_cards, open_store
from support.workers import StartWorker

pytestmark = pytest.mark.slow
CARDS = 50
CANCEL_DEADLINE_S = 5.0  # issue 14: every agent group gone within 5 s of the cancel storm


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=5).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def _pids(folder: Path) -> dict[str, int]:
    """Each card's agent's pid, as it wrote it (in its sandbox: the pid in its own PID namespace)."""
    return {p.stem: int(p.read_text().split()[0]) for p in folder.glob("*.pid") if p.read_text().strip()}


@pytest.mark.timeout(240)
def test_cancel_storm_of_fifty_running_cards_ends_every_agent_and_frees_every_slot(
        tmp_path: Path, redis_url: str, sqlite_url: str, start_worker: StartWorker,
        spawn: Callable[..., subprocess.Popen[Any]]) -> None:
    # Given 50 cards running a cheap sleeping agent (a shell exec'ing sleep, its pid in a file)
    # on two workers of 25 slots, the orchestrator and the API
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    write_agents(tmp_path, sleeper=["/bin/sh", "-c", f"echo $$ > {pid_dir}/{{card_id}}.pid; exec sleep 300"])
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url, SQUAD_LEASE_S="30",
                    SQUAD_RETRY_BACKOFF="0.2", SQUAD_REQUEUE_AFTER="30")
    workers = [start_worker(env, concurrency=CARDS // 2, name=f"storm-{i}@test", wait_ready=False)
               for i in range(2)]
    for w in workers:
        wait_for(lambda w=w: "ready." in w.log() or w.proc.poll() is not None, 120, message=f"{w.hostname} ready")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(tmp_path / "api.log", "wb") as api_log:
        spawn("serve", "--port", str(port), env=env, stdout=api_log)
    ids = [f"STORM-{i:02d}" for i in range(CARDS)]
    with open_store(sqlite_url) as store, orchestrator(env, tmp_path / "orch.log"):
        wait_for(lambda: _up(base), 120, interval=0.3, message="API up")
        add_cards(store, *({"card_id": cid} for cid in ids))
        wait_for(lambda: len(_pids(pid_dir)) == CARDS and store.count_by_status()[Status.IN_PROGRESS] == CARDS,
                 150, interval=0.3, message="all 50 agents running")
        agents = {card: host_pid(pid, env={"SQUAD_CARD_ID": card}) for card, pid in _pids(pid_dir).items()}
        assert [card for card, p in agents.items() if not alive(p)] == []

        # When all 50 are cancelled at once through the API
        with httpx.Client(base_url=base, timeout=60, limits=httpx.Limits(max_connections=CARDS)) as client, \
                ThreadPoolExecutor(CARDS) as pool:
            started = time.monotonic()
            futures = [pool.submit(client.post, f"/api/tasks/{cid}/cancel") for cid in ids]
            wait_for(lambda: store.count_by_status()[Status.CANCELLED] == CARDS, 60, interval=0.05,
                     message="every card CANCELLED")
            cancelled_s = time.monotonic() - started

            # Expect every agent gone within 5 s of its card being cancelled (answers still coming back)
            wait_for(lambda: not any(alive(p) for p in agents.values()), CANCEL_DEADLINE_S, interval=0.05,
                     message="every agent group gone")
            gone_s = time.monotonic() - started
            answers = [f.result() for f in futures]
            answered_s = time.monotonic() - started
        assert [a.status_code for a in answers] == [200] * CARDS, [a.text for a in answers if a.status_code != 200]

        # and none retried nor DONE afterwards: each card CANCELLED with its one run cancelled
        time.sleep(3)
        cards = store.get_cards(ids)
        assert {cid: cards[cid].status for cid in ids} == dict.fromkeys(ids, Status.CANCELLED)
        runs = {cid: [r.status for r in store.list_runs(cid)] for cid in ids}
        assert runs == {cid: ["cancelled"] for cid in ids}
        assert len(_pids(pid_dir)) == CARDS  # no second agent started

        # and /api/workers shows every slot free
        def slots_free() -> bool:
            body = httpx.get(f"{base}/api/workers", timeout=10).json()
            storm = [w for w in body["workers"] if w["name"].startswith("storm-")]
            return len(storm) == 2 and all(w["status"] == "online" and not w["active_cards"] for w in storm)

        wait_for(slots_free, 60, interval=0.5, message="/api/workers: no active card")
    record("cancel storm (50 running cards, API)", in_flight=CARDS, done=0, lost=0, run_twice=0, orphans=0,
           recover_s=gone_s, note=f"all CANCELLED {cancelled_s:.1f} s, answered {answered_s:.1f} s after the storm; "
                                  "time = storm to last agent gone")
