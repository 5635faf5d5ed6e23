"""Cards per second end to end through squad workers vs bare Celery running `true`.

Same Redis, same worker settings (concurrency, prefetch 1, acks late), same run. The squad figure is
whole `squad orchestrate --once --wait` runs (its start-up included); a second figure starts at the
first card queued, as the baseline's clock starts at its first `delay()`. The CPU table (ms per card
of every process of each path) is what to read when other jobs share the machine: cards/s moves with
them, CPU time much less.
Each squad path runs once per `--sandbox` kind (`none`, `bwrap`: the agent inside bubblewrap), and
with `--compare SRC` once more from another checkout's `src`, all in the same rounds (bare, then each
squad path in turn), so every path is measured against the same baseline at the same load.
Run: `python bench/throughput.py [--cards 1000] [--rounds 3] [--concurrency 2] [--sandbox none,bwrap]
[--compare /path/to/old/src]`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).parent))
from _common import median, noop_project, start_redis, table

ROOT = Path(__file__).resolve().parent.parent


def _worker(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while "ready." not in log.read_text(errors="replace"):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"worker did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    return proc


def pool_memory_mib(proc: subprocess.Popen[bytes]) -> float:
    """Median unique memory (USS, MiB) of the Celery pool processes under `proc`: what one more
    worker slot costs (RSS would count pages shared with the parent after fork)."""
    import psutil

    procs = psutil.Process(proc.pid).children(recursive=True)
    pool = [p for p in procs if p.children() == [] and p.ppid() != proc.pid] or procs
    values = []
    for p in pool:
        try:
            values.append(p.memory_full_info().uss / 2**20)
        except psutil.Error:
            continue
    return sorted(values)[len(values) // 2] if values else 0.0


MEMORY: dict[str, list[float]] = {}
#: CPU ms per card of each path, by part: its worker (every process of the tree, with the agents
#: they reaped), the sender (bare: this process's delay() loop; squad: the orchestrate process) and
#: Redis. Unlike cards/s, CPU time is not much moved by other jobs sharing the machine's two cores.
CPU: dict[str, list[dict[str, float]]] = {}
REDIS_PID = [0]


def _tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its descendants, live ones and those they reaped."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


class CpuMeter:
    """CPU of one path's run: worker tree, sender and Redis, from before its first card to its last."""

    def __init__(self, worker: subprocess.Popen[bytes]) -> None:
        self.worker = worker
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        import psutil

        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        redis_t = psutil.Process(REDIS_PID[0]).cpu_times()
        return {"worker": _tree_cpu(self.worker.pid), "self": me.ru_utime + me.ru_stime,
                "children": kids.ru_utime + kids.ru_stime, "redis": redis_t.user + redis_t.system}

    def stop(self, path: str, cards: int, sender: str) -> None:
        end = self._read()
        per_card = {k: (end[k] - self.start[k]) * 1000 / cards for k in end}
        CPU.setdefault(path, []).append({"worker": per_card["worker"], "sender": per_card[sender],
                                         "redis": per_card["redis"]})


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def bare_celery(url: str, cards: int, concurrency: int, tmp: Path) -> float:
    env = {**os.environ, "BENCH_BROKER": url, "PYTHONPATH": f"{ROOT / 'bench'}:{ROOT / 'src'}"}
    proc = _worker([sys.executable, "-m", "celery", "-A", "baseline_app", "worker", "-c", str(concurrency),
                    "--loglevel", "INFO", "-n", "baseline@%h"], env, tmp, tmp / "baseline.log")
    try:
        sys.path.insert(0, str(ROOT / "bench"))
        os.environ["BENCH_BROKER"] = url
        import baseline_app

        counter = redis.Redis.from_url(f"{url}/3")
        counter.delete("baseline:done")
        meter = CpuMeter(proc)
        start = time.perf_counter()
        for _ in range(cards):
            baseline_app.run_true.delay()
        while int(counter.get("baseline:done") or 0) < cards:
            time.sleep(0.05)
        rate = cards / (time.perf_counter() - start)
        meter.stop("bare", cards, sender="self")
        MEMORY.setdefault("bare", []).append(pool_memory_mib(proc))
        return rate
    finally:
        _stop(proc)


STEADY: dict[str, list[float]] = {}  # squad cards/s from the first card queued to the last run ended


def _steady_rate(db: Path, cards: int) -> float:
    """Cards/s once the orchestrator is up: from the first `queued_at` (stamped by its first release,
    just before the message is sent) to the last run's `ended_at`. The bare baseline's clock likewise
    starts with its first `delay()`, its Celery app already imported; `squad orchestrate` is a new
    process whose imports and set-up (~0.6-1 s) the end-to-end figure includes."""
    con = sqlite3.connect(db)
    try:
        first = con.execute("SELECT min(queued_at) FROM cards").fetchone()[0]
        last = con.execute("SELECT max(ended_at) FROM runs").fetchone()[0]
    finally:
        con.close()
    return cards / (last - first)


def squad_run(url: str, cards: int, concurrency: int, tmp: Path, *, path: str, sandbox: str,
              src: Path) -> float:
    work, env = noop_project(tmp, url, sandbox=sandbox, src=src)
    backlog = {"cards": [{"card_id": f"c{i}", "title": f"card {i}"} for i in range(cards)]}
    (work / "backlog.json").write_text(json.dumps(backlog))
    subprocess.run([sys.executable, "-m", "squad", "backlog", "import", "backlog.json"], env=env, cwd=work, check=True,
                   capture_output=True)
    redis.Redis.from_url(url).flushall()
    proc = _worker([sys.executable, "-m", "squad", "worker", "--concurrency", str(concurrency), "--hostname",
                    "bench@%h", "--queues", "cards"], env, work, work / "worker.log")
    try:
        meter = CpuMeter(proc)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "squad", "orchestrate", "--once", "--wait", "--mode", "celery",
                               "--interval", "0.5"], env=env, cwd=work, check=False, capture_output=True)
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace")[-3000:]
            raise SystemExit(f"squad orchestrate exited {done.returncode}: {err}")
        rate = cards / (time.perf_counter() - start)
        meter.stop(path, cards, sender="children")
        MEMORY.setdefault(path, []).append(pool_memory_mib(proc))
        STEADY.setdefault(path, []).append(_steady_rate(work / "squad.db", cards))
        _check_sandbox(work / "squad.db", sandbox)
        return rate
    finally:
        _stop(proc)


def _check_sandbox(db: Path, sandbox: str) -> None:
    """Every card ran, and in the sandbox asked for (a figure must say what it measured)."""
    con = sqlite3.connect(db)
    try:
        columns = {row[1] for row in con.execute("PRAGMA table_info(runs)")}
        if "sandbox" not in columns:  # an older checkout (--compare) that does not record it
            return
        kinds = {row[0] for row in con.execute("SELECT DISTINCT sandbox FROM runs")}
    finally:
        con.close()
    if not all(str(kind or "none").startswith(sandbox) for kind in kinds):
        raise SystemExit(f"asked for sandbox {sandbox}, the runs say {sorted(map(str, kinds))}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cards", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--sandbox", default="none,bwrap", help="comma-separated [sandbox] kinds, each its own path")
    ap.add_argument("--compare", type=Path, help="another checkout's src: its squad paths run in the same rounds")
    args = ap.parse_args()
    sources = [("now", ROOT / "src")] + ([("before", args.compare.resolve())] if args.compare else [])
    paths = [(f"squad {label}, sandbox {kind}", kind, src) for label, src in sources
             for kind in args.sandbox.split(",")]
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        redis_proc, url = start_redis(tmp / "redis")
        REDIS_PID[0] = redis_proc.pid
        try:
            bare: list[float] = []
            ours: dict[str, list[float]] = {}
            for r in range(args.rounds):
                bare.append(bare_celery(url, args.cards, args.concurrency, tmp))
                line = [f"round {r + 1}: bare {bare[-1]:.1f}/s"]
                for path, kind, src in paths:
                    ours.setdefault(path, []).append(squad_run(url, args.cards, args.concurrency, tmp, path=path,
                                                               sandbox=kind, src=src))
                    line.append(f"{path} {ours[path][-1]:.1f}/s (from the first card queued {STEADY[path][-1]:.1f}/s, "
                                f"CPU {sum(CPU[path][-1].values()):.2f} ms/card)")
                load.append(os.getloadavg()[0])
                print("; ".join(line), flush=True)
        finally:
            redis_proc.terminate()

    def mmm(values: list[float], fmt: str = "{:.1f}") -> str:
        v = sorted(values)
        return " / ".join(fmt.format(x) for x in (v[0], median(v), v[-1]))

    def per_round(a: list[float], b: list[float]) -> list[float]:
        return [x / y for x, y in zip(a, b, strict=True)]

    print(f"load average at end: {os.getloadavg()[0]:.2f} (after each round: "
          f"{', '.join(f'{x:.1f}' for x in load[1:])}); cards={args.cards} c={args.concurrency}")
    rows = [["bare Celery + subprocess.run(true)", mmm(bare), "", "", "", mmm(MEMORY["bare"])]]
    for path, _kind, _src in paths:
        rows.append([path, mmm(ours[path]), mmm(per_round(ours[path], bare), "{:.2f}"), mmm(STEADY[path]),
                     mmm(per_round(STEADY[path], bare), "{:.2f}"), mmm(MEMORY[path])])
    print(table(["path", "cards/s end to end (min / median / max)", "ratio to bare, per round",
                 "cards/s from the first card queued", "ratio of that to bare", "pool process USS MiB"], rows))
    rows = []
    for path in ["bare", *(p for p, _k, _s in paths)]:
        parts = {k: [c[k] for c in CPU[path]] for k in ("worker", "sender", "redis")}
        totals = [sum(c.values()) for c in CPU[path]]
        capacity = "" if path == "bare" else mmm(
            [sum(b.values()) / sum(o.values()) for b, o in zip(CPU["bare"], CPU[path], strict=True)], "{:.2f}")
        rows.append([path, mmm(totals, "{:.2f}"), *(mmm(parts[k], "{:.2f}") for k in parts), capacity])
    print()
    print(table(["CPU ms per card", "all processes", "worker (with its agents)", "sender (bare: delay loop; "
                 "squad: orchestrate)", "redis", "bare CPU / this CPU, per round"], rows))


if __name__ == "__main__":
    main()
