"""Clock skew: leases are judged by the database's clock (PostgreSQL), not by the clocks of the
machines that write or sweep them. The skew is faked per process with a `sitecustomize` that
shifts `time.time()` (libfaketime is not part of the test machine)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from squad.core.statuses import Status
from support.cli import orchestrator, squad_env
from support.fake_agents import commits, read_ledger, write_agents
from support.paths import AGENTS
from support.processes import leftovers, wait_for
from support.reliability import record
from support.store import add_cards, open_store
from support.workers import StartWorker

pytestmark = pytest.mark.slow
PY = sys.executable
SKEW_S = 300  # five minutes

SITECUSTOMIZE = '''\
import os
import time

_offset = float(os.environ.get("SQUAD_TEST_CLOCK_OFFSET_S", "0"))
_real_time = time.time
time.time = lambda: _real_time() + _offset
time.time_ns = lambda: int((_real_time() + _offset) * 1e9)
'''


def skewed(env: dict[str, str], folder: Path, offset_s: float) -> dict[str, str]:
    """The environment of a process whose wall clock is `offset_s` off."""
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    return {**env, "SQUAD_TEST_CLOCK_OFFSET_S": str(offset_s),
            "PYTHONPATH": str(folder) + os.pathsep + env.get("PYTHONPATH", "")}


@pytest.mark.timeout(180)
def test_skewed_clocks_neither_steal_a_live_lease_nor_sweep_a_healthy_worker(
        tmp_path: Path, redis_url: str, pg_url: str, start_worker: StartWorker) -> None:
    # Given PostgreSQL, a 3 s lease, a worker whose clock is 5 minutes behind (its leases would
    # look expired to everyone) and a sweeper whose clock is 5 minutes ahead (it would judge every
    # lease expired), and two cards of ~8 s whose agents keep a ledger
    ledger = tmp_path / "ledger.txt"
    write_agents(tmp_path, fake=[PY, str(AGENTS / "ledger_steps.py"), str(ledger), "16", "0.5"])
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=pg_url, SQUAD_LEASE_S="3",
                    SQUAD_RETRY_BACKOFF="0.2", SQUAD_REQUEUE_AFTER="30")
    start_worker(skewed(env, tmp_path / "behind", -SKEW_S), concurrency=2, name="behind@test")
    ids = ["SKEW-1", "SKEW-2"]
    with open_store(pg_url) as store, orchestrator(skewed(env, tmp_path / "ahead", SKEW_S), tmp_path / "orch.log"):
        # When they run for several leases
        add_cards(store, *({"card_id": cid} for cid in ids))
        started = time.monotonic()
        wait_for(lambda: all(c.status == Status.DONE for c in store.get_cards(ids).values())
                 or any(r.status == "lost" for cid in ids for r in store.list_runs(cid)), 90, interval=0.2,
                 message="both cards DONE (or one swept)")
        elapsed = time.monotonic() - started
        runs = {cid: [(r.attempt, r.status) for r in store.list_runs(cid)] for cid in ids}

    # Expect each card done by its one attempt: no lease swept, nothing run twice
    assert runs == {cid: [(1, "succeeded")] for cid in ids}
    assert "stale lease swept" not in (tmp_path / "orch.log").read_text()
    entries = read_ledger(ledger)
    assert commits(entries) == dict.fromkeys(ids, 1)
    assert sum(1 for w, *_ in entries if w == "start") == len(ids)
    assert not [p for p in leftovers(tmp_path) if "ledger_steps.py" in p]
    record("clock skew (worker -5 min, sweeper +5 min, PostgreSQL)", in_flight=len(ids), done=len(ids), lost=0,
           run_twice=0, orphans=0, recover_s=0.0,
           note=f"cards ran {elapsed:.1f} s with a 3 s lease; nothing to recover")
