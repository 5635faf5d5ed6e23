"""Chaos: real Redis, real `squad worker` processes, real agents, and things dying at the worst time.

Every test owns what it starts (workers through `start_worker`, the rest in try/finally) and checks
that no agent, worker or redis-server outlives it. Nothing is mocked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from squad.core.cards import Run
from squad.core.statuses import Status
from squad.store.card_store import CardStore
from support.cli import orchestrator, squad_env
from support.fake_agents import write_agents
from support.paths import AGENTS
from support.processes import alive, free_port, kill_tree, leftovers, no_leftovers, read_pid, wait_for
from support.redis_server import RedisServer
from support.reliability import record
from support.store import add_cards, open_store, status_of
from support.workers import StartWorker, Worker

pytestmark = pytest.mark.slow
PY = sys.executable


# ---- helpers --------------------------------------------------------------------------------
def all_done(store: CardStore, card_ids: list[str]) -> bool:
    cards = store.get_cards(card_ids)
    return all(c in cards and cards[c].status == Status.DONE for c in card_ids)


def succeeded(runs: list[Run]) -> list[Run]:
    return [r for r in runs if r.status == "succeeded"]


def celery_main(worker: Worker) -> psutil.Process:
    """The Celery worker process that `squad worker` supervises (its direct child)."""
    mains = [p for p in psutil.Process(worker.proc.pid).children() if "celery" in " ".join(p.cmdline())]
    assert len(mains) == 1, f"expected one celery child, got {mains}"
    return mains[0]


def sigkill_worker_tree(worker: Worker) -> list[int]:
    """SIGKILL supervisor, Celery main and pool processes at once, but not the agents:
    those must die by themselves (parent-death signal)."""
    procs = [psutil.Process(worker.proc.pid),
             *(p for p in worker.celery_children() if "squad.celery_app" in " ".join(p.cmdline()))]
    for proc in procs:
        proc.kill()
    worker.proc.wait(timeout=10)
    return [p.pid for p in procs]


# ---- 1. a worker killed mid-card ------------------------------------------------------------
def test_worker_killed_mid_card_completes_exactly_once(
        tmp_path: Path, redis_url: str, sqlite_url: str, start_worker: StartWorker) -> None:
    # Given a card whose first attempt runs for a minute (its agent writes its pid), one worker,
    # a 3 s lease and an orchestrator sweeping stale leases
    write_agents(tmp_path, fake=[PY, str(AGENTS / "pid_sleep.py"), str(tmp_path / "agent-{attempt}.pid"), "60", "1"])
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url, SQUAD_LEASE_S="3",
                    SQUAD_RETRY_BACKOFF="0.5", SQUAD_REQUEUE_AFTER="3")
    first = start_worker(env, concurrency=1, name="doomed@test")
    with open_store(sqlite_url) as store, orchestrator(env, tmp_path / "orch.log"):
        add_cards(store, {"card_id": "KILL-1"})
        agent_pid = read_pid(tmp_path / "agent-1.pid")
        wait_for(lambda: store.execution_state("KILL-1").get("claimed_by") == "doomed@test", 10,
                 message="claim by the first worker")

        # When the whole worker tree is SIGKILLed mid-card, and a fresh worker starts
        killed_at = time.monotonic()
        sigkill_worker_tree(first)
        wait_for(lambda: not alive(agent_pid), 10, message="the agent to die with its worker")
        agent_gone_s = time.monotonic() - killed_at
        start_worker(env, concurrency=1, name="fresh@test")
        second_pid = read_pid(tmp_path / "agent-2.pid", timeout=60)
        rerun_s = time.monotonic() - killed_at
        wait_for(lambda: status_of(store, "KILL-1") == Status.DONE, 60, message="KILL-1 DONE")

        # Expect DONE exactly once: the killed attempt is a run with error "worker lost"
        card = store.get_card("KILL-1")
        runs = store.list_runs("KILL-1")
        assert card.attempts == 2
        assert [(r.attempt, r.status, r.error) for r in runs] == [(1, "lost", "worker lost"), (2, "succeeded", None)]
        assert runs[1].worker == "fresh@test"
        wait_for(lambda: not alive(second_pid), 10, message="second agent to exit")
    print(f"\nagent died {agent_gone_s:.2f}s after the kill; re-run started {rerun_s:.1f}s after the kill")
    assert not [p for p in leftovers(tmp_path) if "pid_sleep.py" in p]
    record("worker SIGKILLed mid-card", in_flight=1, done=1, lost=0, run_twice=0, orphans=0, recover_s=rerun_s,
           note=f"agent gone {agent_gone_s:.2f} s after the kill; time = kill to re-run started")


# ---- 2. stale lease swept, healthy long card left alone --------------------------------------
def test_stale_lease_is_swept_but_a_healthy_long_card_is_never_marked_lost(
        tmp_path: Path, redis_url: str, sqlite_url: str, start_worker: StartWorker) -> None:
    # Given two single-slot workers, a 2 s lease, a card running 15 s (over 7 leases) on one of them
    write_agents(tmp_path, fake=[PY, str(AGENTS / "pid_sleep.py"), str(tmp_path / "{card_id}-{attempt}.pid"),
                                 "15", "1"])
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url, SQUAD_LEASE_S="2",
                    SQUAD_RETRY_BACKOFF="0.5", SQUAD_REQUEUE_AFTER="3")
    workers = {w.hostname: w for w in (start_worker(env, concurrency=1, name="a@test", wait_ready=False),
                                       start_worker(env, concurrency=1, name="b@test", wait_ready=False))}
    for w in workers.values():
        wait_for(lambda w=w: "ready." in w.log(), 90, message=f"{w.hostname} ready")
    with open_store(sqlite_url) as store, orchestrator(env, tmp_path / "orch.log"):
        add_cards(store, {"card_id": "LONG"})
        read_pid(tmp_path / "LONG-1.pid")
        long_host = store.execution_state("LONG")["claimed_by"]
        other = next(w for name, w in workers.items() if name != long_host)
        add_cards(store, {"card_id": "DOOMED"})
        read_pid(tmp_path / "DOOMED-1.pid")
        assert store.execution_state("DOOMED")["claimed_by"] == other.hostname

        # When the worker holding DOOMED is SIGKILLed while LONG keeps running
        sigkill_worker_tree(other)
        swept_at = time.monotonic()
        long_status: set[Status] = set()
        swept_while_long_ran = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all_done(store, ["LONG", "DOOMED"]):
            long_status.add(status_of(store, "LONG"))
            doomed_runs = store.list_runs("DOOMED")
            if doomed_runs[0].error == "worker lost" and status_of(store, "LONG") == Status.IN_PROGRESS:
                swept_while_long_ran = True
            long_runs = store.list_runs("LONG")
            assert len(long_runs) == 1 and long_runs[0].status != "lost", f"LONG was swept: {long_runs}"
            time.sleep(0.2)

        # Expect DOOMED swept as "worker lost" and re-run; LONG only ever IN_PROGRESS, then DONE, one run
        assert all_done(store, ["LONG", "DOOMED"])
        assert swept_while_long_ran, "the stale lease was only swept after the long card ended"
        long_runs = store.list_runs("LONG")
        assert [(r.attempt, r.status, r.error) for r in long_runs] == [(1, "succeeded", None)]
        assert long_runs[0].worker == long_host
        assert long_status <= {Status.IN_PROGRESS, Status.DONE}
        doomed_runs = store.list_runs("DOOMED")
        assert [(r.status, r.error) for r in doomed_runs] == [("lost", "worker lost"), ("succeeded", None)]
    assert not [p for p in leftovers(tmp_path) if "pid_sleep.py" in p]
    record("stale lease swept, healthy long card kept", in_flight=2, done=2, lost=0, run_twice=0, orphans=0,
           recover_s=time.monotonic() - swept_at, note="time = kill to both cards DONE")


# ---- 3. Redis stopped and restarted while 20 cards run ---------------------------------------
# With AOF the broker keeps its messages; the run caps cards in flight below the four slots so a
# worker is polling Redis with a card running when it goes away: the setting in which Celery exits
# with `Unrecoverable error` (docs/architecture.md, "Surviving Redis faults") and `squad worker`
# must restart it. Without
# persistence every message waiting in the broker vanishes and the reconciler must send it again.
SETTLE_BOUND_S = 300  # Redis back to every card DONE, at most (a bound, not a figure)


@pytest.mark.timeout(600)  # above the sum of the bounds inside, so a stall reports itself
@pytest.mark.parametrize(("aof", "extra"), [(True, ["--max-in-flight", "3"]), (False, [])],
                         ids=["aof-free-slots", "no-persistence-backlog"])
def test_redis_restart_while_twenty_cards_run_ends_every_card_done_exactly_once(
        aof: bool, extra: list[str], tmp_path: Path, redis_server: RedisServer, redis_url: str, sqlite_url: str,
        start_worker: StartWorker) -> None:
    # Given Redis with (or without) AOF from the start, two workers of two slots, 20 cards of ~1.5 s,
    # short lease and requeue delays, and `squad orchestrate --wait` running
    redis_server.stop()
    for stale in redis_server.workdir.glob("appendonly*"):
        if stale.is_dir():
            for part in stale.iterdir():
                part.unlink()
            stale.rmdir()
        else:
            stale.unlink()
    redis_server.start(aof=aof)
    write_agents(tmp_path, fake=[PY, str(AGENTS / "markers.py"), "0.25"])
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url, SQUAD_LEASE_S="3",
                    SQUAD_RETRY_BACKOFF="0.5", SQUAD_REQUEUE_AFTER="3")
    workers = [start_worker(env, concurrency=2, name="blip-a@test", wait_ready=False),
               start_worker(env, concurrency=2, name="blip-b@test", wait_ready=False)]
    for w in workers:
        wait_for(lambda w=w: "ready." in w.log() or w.proc.poll() is not None, 90, message=f"{w.hostname} ready")
        assert w.proc.poll() is None, w.log()
    first_mains = {w.hostname: celery_main(w).pid for w in workers}
    ids = [f"BLIP-{i:02d}" for i in range(20)]
    try:
        with open_store(sqlite_url) as store:
            add_cards(store, *({"card_id": cid} for cid in ids))
            with orchestrator(env, tmp_path / "orch.log", "--wait", *extra) as orch:
                wait_for(lambda: store.count_by_status()[Status.DONE] >= 4
                         and store.count_by_status()[Status.IN_PROGRESS] >= 1, 90, interval=0.05,
                         message="some cards done and some running")

                # When Redis goes away for a few seconds mid-run and comes back
                before = {k: v for k, v in store.count_by_status().items() if v}
                redis_server.stop()
                time.sleep(4)
                redis_server.start()
                restarted_at = time.monotonic()
                try:  # a bound, not a figure: the suite runs in two processes on a busy machine
                    code = orch.wait(timeout=SETTLE_BOUND_S)
                except subprocess.TimeoutExpired:
                    raise AssertionError(_stall_report(store, ids, tmp_path / "orch.log", workers)) from None
                settle_s = time.monotonic() - restarted_at
            orch_log = (tmp_path / "orch.log").read_text(errors="replace")

            # Expect the orchestrator to finish cleanly and every card DONE with exactly one successful run
            assert code == 0, orch_log[-3000:]
            cards = store.get_cards(ids)
            assert {cid: cards[cid].status for cid in ids} == dict.fromkeys(ids, Status.DONE)
            runs = {cid: store.list_runs(cid) for cid in ids}
            odd = {cid: [(r.attempt, r.status, r.error, r.worker, r.task_id) for r in rs]
                   for cid, rs in runs.items() if len(succeeded(rs)) != 1}
            assert not odd, f"cards without exactly one successful run: {odd}"
            failed = {cid: [run.error for run in r if run.status != "succeeded"] for cid, r in runs.items()}
            failed = {cid: errors for cid, errors in failed.items() if errors}

            # and each worker either stayed up or died and was restarted by `squad worker`
            facts = []
            for w in workers:
                assert w.proc.poll() is None, w.log()[-3000:]
                if "child exited; restarting" in w.log():
                    wait_for(lambda w=w: w.log().count("ready.") >= 2, 60, message=f"{w.hostname} ready again")
                    assert celery_main(w).pid != first_mains[w.hostname]
                    facts.append(f"{w.hostname} died and was restarted")
                else:
                    assert celery_main(w).pid == first_mains[w.hostname]
                    facts.append(f"{w.hostname} stayed up")
                if "Unrecoverable error" in w.log():
                    facts[-1] += " (logged Unrecoverable error)"
    finally:
        if redis_server.proc is None:
            redis_server.start()
    requeued = orch_log.count("re-enqueueing card whose message is gone")
    print(f"\nbefore the blip {before}; all DONE {settle_s:.1f}s after Redis returned; {'; '.join(facts)}; "
          f"messages re-sent {requeued}; failed runs {failed}")
    record(f"Redis restarted mid-run ({'AOF' if aof else 'no persistence'})",
           in_flight=before.get(Status.QUEUED, 0) + before.get(Status.IN_PROGRESS, 0), done=len(ids), lost=0,
           run_twice=0, orphans=0, recover_s=settle_s,
           note=f"{requeued} messages re-sent; time = Redis back to all 20 DONE")


def _stall_report(store: CardStore, ids: list[str], orch_log: Path, workers: list[Worker]) -> str:
    """What was left when `orchestrate --wait` did not end: the cards not DONE with their runs, the logs' tails."""
    cards = store.get_cards(ids)
    left = {cid: (c.status.value, [(r.attempt, r.status, r.error, r.worker) for r in store.list_runs(cid)])
            for cid, c in cards.items() if c.status != Status.DONE}
    logs = "\n".join(f"--- {w.hostname}\n{w.log()[-2500:]}" for w in workers)
    return (f"orchestrate --wait still running {SETTLE_BOUND_S} s after Redis returned; not DONE: {left}\n"
            f"--- orchestrator\n{orch_log.read_text(errors='replace')[-2500:]}\n{logs}")


# ---- 4. a dead Celery worker process is restarted -------------------------------------------
def test_dead_celery_worker_process_is_restarted_by_squad_worker(
        tmp_path: Path, redis_url: str, sqlite_url: str, start_worker: StartWorker) -> None:
    # Given a running `squad worker`
    write_agents(tmp_path, fake=[PY, str(AGENTS / "markers.py")])
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url)
    worker = start_worker(env, concurrency=1, name="phoenix@test")
    main = celery_main(worker)
    pool = main.children()

    # When its Celery worker process (not the supervisor) is SIGKILLed
    main.kill()

    # Expect a new Celery worker that gets ready, the old pool gone, and a card sent afterwards DONE
    wait_for(lambda: worker.log().count("ready.") >= 2, 90, message="restarted worker ready")
    assert worker.proc.poll() is None
    assert "child exited; restarting" in worker.log()
    assert celery_main(worker).pid != main.pid
    wait_for(lambda: not any(alive(p.pid) for p in pool), 30, message="old pool processes gone")
    with open_store(sqlite_url) as store:
        add_cards(store, {"card_id": "AFTER"})
        with orchestrator(env, tmp_path / "orch.log", "--wait") as orch:
            assert orch.wait(timeout=90) == 0, (tmp_path / "orch.log").read_text()
        assert status_of(store, "AFTER") == Status.DONE
        runs = store.list_runs("AFTER")
        assert [(r.status, r.worker) for r in runs] == [("succeeded", "phoenix@test")]


# ---- 5. `squad up --demo` end to end ---------------------------------------------------------
@pytest.mark.timeout(240)
def test_squad_up_demo_runs_every_demo_card_and_sigterm_leaves_nothing_behind(tmp_path: Path) -> None:
    # Given no Redis at SQUAD_REDIS_URL (so `squad up` starts its embedded one) and a fast demo agent
    env = squad_env(SQUAD_REDIS_URL=f"redis://127.0.0.1:{free_port()}", SQUAD_DEMO_DURATION="1",
                    SQUAD_RETRY_BACKOFF="1", SQUAD_LEASE_S="5", SQUAD_REQUEUE_AFTER="5")
    log_path = tmp_path / "up.log"
    db = tmp_path / ".squad" / "demo.db"
    demo_ids = [f"DEMO-{i}" for i in range(1, 7)]
    with open(log_path, "wb") as out:
        # When `squad up --demo` runs
        proc = subprocess.Popen([PY, "-m", "squad", "up", "--demo", "--port", str(free_port()), "--concurrency", "2"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            wait_for(lambda: db.exists() or proc.poll() is not None, 60, message="demo store")
            assert proc.poll() is None, log_path.read_text()
            with open_store(f"sqlite:///{db}") as store:
                wait_for(lambda: proc.poll() is not None or all_done(store, demo_ids), 150, interval=0.5,
                         message="every demo card DONE")
                assert proc.poll() is None, log_path.read_text()[-3000:]

                # Expect every demo card DONE, DEMO-4 after one failed attempt, with the embedded Redis on AOF
                runs = {cid: store.list_runs(cid) for cid in demo_ids}
            assert {cid: [r.status for r in rs] for cid, rs in runs.items()} == {
                **{cid: ["succeeded"] for cid in demo_ids}, "DEMO-4": ["failed", "succeeded"]}
            assert "embedded redis-server" in log_path.read_text()
            assert list((tmp_path / ".squad" / "redis").glob("appendonly*"))

            # When SIGTERM reaches `squad up`
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=90)
        finally:
            if proc.poll() is None:
                kill_tree(proc)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    # Expect exit code 143 (stopped by SIGTERM) and no redis-server, worker, beat, orchestrator or agent left
    assert code == 143, log_path.read_text()[-3000:]
    no_leftovers(tmp_path)


# ---- 6. time limits and stalls end the whole process group ----------------------------------
def test_hung_agent_hits_the_time_limit_and_its_whole_group_is_gone(
        tmp_path: Path, redis_url: str, sqlite_url: str, start_worker: StartWorker) -> None:
    # Given a 2 s soft / 3 s hard limit and agents that hang with a grandchild ignoring SIGTERM:
    # one agent ignores SIGTERM itself, one's grandchild left the process group, and one card
    # whose soft limit equals its hard limit (3 s), so the hard limit ends it with no grace
    grandchild = [PY, str(AGENTS / "grandchild.py"), str(tmp_path / "{card_id}.grandchild")]
    write_agents(tmp_path, stubborn=[*grandchild, "sleep", "--ignore-term"], escapee=[*grandchild, "sleep", "--setsid"])
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url, SQUAD_TIME_LIMIT="3",
                    SQUAD_SOFT_TIME_LIMIT="2", SQUAD_VISIBILITY_TIMEOUT="700", SQUAD_MAX_RETRIES="0")
    start_worker(env, concurrency=3, name="limits@test")
    errors = {"STUBBORN": "soft time limit exceeded (2s)", "ESCAPEE": "soft time limit exceeded (2s)",
              "HARD": "time limit exceeded (3s)"}
    with open_store(sqlite_url) as store:
        add_cards(store, {"card_id": "STUBBORN", "agent": "stubborn"}, {"card_id": "ESCAPEE", "agent": "escapee"},
                  {"card_id": "HARD", "agent": "stubborn", "soft_time_limit": 3, "time_limit": 3})

        # When the orchestrator runs them
        with orchestrator(env, tmp_path / "orch.log", "--wait") as orch:
            grandchildren = {cid: read_pid(tmp_path / f"{cid}.grandchild", 60) for cid in errors}
            # (an agent already ended by its limit on a loaded machine is simply not found here)
            agents = {cid: next((p.pid for p in psutil.process_iter(["cmdline"])
                                 if f"{cid}.grandchild" in " ".join(p.info["cmdline"] or [])
                                 and "grandchild.py" in " ".join(p.info["cmdline"] or [])), 0) for cid in errors}
            agents = {cid: pid for cid, pid in agents.items() if pid}
            code = orch.wait(timeout=90)

        # Expect each attempt failed with its time limit error, the cards FAILED (no retries left),
        # and every agent and grandchild gone
        assert code == 1, [(cid, status_of(store, cid), store.list_runs(cid)) for cid in errors]
        for cid, error in errors.items():
            assert status_of(store, cid) == Status.FAILED
            assert [(r.status, r.error) for r in store.list_runs(cid)] == [("failed", error)]
        wait_for(lambda: not any(alive(p) for p in [*agents.values(), *grandchildren.values()]), 15,
                 message="agents and grandchildren gone")
    record("hung agents past soft/hard time limits", in_flight=3, done=0, lost=0, run_twice=0, orphans=0,
           recover_s=0.0, note="3 attempts failed with their limit error, every agent and grandchild gone")


def test_silent_agent_is_ended_as_stalled(
        tmp_path: Path, redis_url: str, sqlite_url: str, start_worker: StartWorker) -> None:
    # Given a 2 s stall timeout and an agent that prints nothing, forever
    write_agents(tmp_path, silent=[PY, str(AGENTS / "hang.py"), str(tmp_path / "silent.pid")])
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url, SQUAD_STALL_TIMEOUT="2",
                    SQUAD_MAX_RETRIES="0")
    start_worker(env, concurrency=1, name="stall@test")
    with open_store(sqlite_url) as store:
        add_cards(store, {"card_id": "SILENT"})

        # When it runs
        with orchestrator(env, tmp_path / "orch.log", "--wait") as orch:
            pid = read_pid(tmp_path / "silent.pid")
            code = orch.wait(timeout=90)

        # Expect the attempt failed with error "stalled" and the agent gone
        assert code == 1
        runs = store.list_runs("SILENT")
        assert [(r.status, r.error) for r in runs] == [("failed", "stalled")]
        assert status_of(store, "SILENT") == Status.FAILED
        wait_for(lambda: not alive(pid), 10, message="silent agent gone")
    record("silent agent (stall timeout)", in_flight=1, done=0, lost=0, run_twice=0, orphans=0, recover_s=0.0,
           note="attempt failed as stalled, agent gone")
