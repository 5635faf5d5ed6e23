"""Fencing: a worker frozen (SIGSTOP) past its lease and then resumed must not write over the truth.

The agent keeps its own ledger (tests/agents/ledger.py), so executions are counted by the agent,
not by the store under test.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from squad.core.statuses import Status
from support.cli import orchestrator, squad_env
from support.fake_agents import commits, read_ledger, write_agents
from support.paths import AGENTS
from support.processes import alive, host_pid, wait_for
from support.reliability import record
from support.store import add_cards, open_store, status_of
from support.workers import StartWorker

pytestmark = pytest.mark.slow
PY = sys.executable


def _freeze_targets(worker_pid: int, agent_pid: int) -> list[psutil.Process]:
    """The whole worker tree (supervisor, Celery main, pool) and the agent: a paused machine."""
    root = psutil.Process(worker_pid)
    return [root, *root.children(recursive=True), psutil.Process(agent_pid)]


@pytest.mark.timeout(150)
def test_frozen_worker_is_fenced_when_it_resumes(
        tmp_path: Path, redis_url: str, sqlite_url: str, start_worker: StartWorker) -> None:
    # Given a card whose agent works 20 steps of 0.3 s, a 2 s lease, and two single-slot workers
    ledger = tmp_path / "ledger.txt"
    write_agents(tmp_path, fake=[PY, str(AGENTS / "ledger_steps.py"), str(ledger), "20", "0.3"])
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url, SQUAD_LEASE_S="2",
                    SQUAD_RETRY_BACKOFF="0.2", SQUAD_REQUEUE_AFTER="3")
    workers = {w.hostname: w for w in (start_worker(env, concurrency=1, name="frozen-a@test"),
                                       start_worker(env, concurrency=1, name="frozen-b@test"))}
    with open_store(sqlite_url) as store, orchestrator(env, tmp_path / "orch.log"):
        add_cards(store, {"card_id": "FROZEN"})
        wait_for(lambda: read_ledger(ledger), 60, message="attempt 1 to start")
        # (the ledger holds the pid in the agent's sandbox: its own PID namespace)
        first_agent = host_pid(read_ledger(ledger)[0][3], env={"SQUAD_CARD_ID": "FROZEN", "SQUAD_ATTEMPT": "1"})
        holder = workers[store.execution_state("FROZEN")["claimed_by"]]

        # When the worker holding it (and its agent) is frozen past the lease, the card is swept and
        # re-run elsewhere, and then the frozen worker is resumed while attempt 2 runs
        frozen = _freeze_targets(holder.proc.pid, first_agent)
        for proc in frozen:
            proc.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: any(a == 2 for w, _c, a, _p in read_ledger(ledger) if w == "start"), 60,
                     message="attempt 2 to start on the other worker")
        finally:
            for proc in reversed(frozen):  # agent first, then the worker tree: everything wakes at once
                proc.send_signal(signal.SIGCONT)
        resumed_at = time.monotonic()

        # Expect the resumed attempt to end its agent at once, without its work being committed
        wait_for(lambda: not alive(first_agent), 10, interval=0.05, message="the fenced agent to be ended")
        fenced_s = time.monotonic() - resumed_at
        wait_for(lambda: status_of(store, "FROZEN") == Status.DONE, 60, message="FROZEN DONE")
        runs = store.list_runs("FROZEN")
        time.sleep(1.5)  # give a late write of the fenced attempt the chance to land (it must not)
        runs_after = store.list_runs("FROZEN")

    # and the runs to tell the truth: attempt 1 lost, attempt 2 succeeded on the other worker
    assert [(r.attempt, r.status, r.error) for r in runs] == [(1, "lost", "worker lost"), (2, "succeeded", None)]
    assert runs_after == runs
    assert runs[1].worker != holder.hostname
    assert store.get_card("FROZEN").status == Status.DONE
    # and the agent's own ledger: two starts, one commit (attempt 2), no commit from the fenced attempt
    entries = read_ledger(ledger)
    assert [(w, a) for w, _c, a, _p in entries if w == "start"] == [("start", 1), ("start", 2)]
    assert [(w, a) for w, _c, a, _p in entries if w == "commit"] == [("commit", 2)]
    log_text = holder.log()
    assert "attempt fenced" in log_text, log_text[-3000:]
    record("frozen worker (SIGSTOP past the lease)", in_flight=1, done=1, lost=0,
           run_twice=sum(n - 1 for n in commits(entries).values() if n > 1), orphans=0, recover_s=fenced_s,
           note="time = resume to fenced agent gone")
