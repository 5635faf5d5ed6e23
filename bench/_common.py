"""Shared pieces of the benchmarks: an own redis-server, medians, a table."""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

import redis

from squad.ops.embedded_redis import free_port, redis_binary


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server (no persistence) for one benchmark run."""
    binary = redis_binary()
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.RedisError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}"


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    sep = "-|-".join("-" * w for w in widths)
    body = "\n".join(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return f"{line}\n{sep}\n{body}"


def cached_bytecode(env: dict[str, str], pycache: Path) -> dict[str, str]:
    """`env` with bytecode cached under `pycache`, as it is for an installed package, whatever
    PYTHONDONTWRITEBYTECODE says: otherwise every squad process compiles squad's own modules first."""
    env = {**env, "PYTHONPYCACHEPREFIX": str(pycache)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def noop_project(tmp: Path, url: str, *, sandbox: str | None = None,
                 src: Path | None = None) -> tuple[Path, dict[str, str]]:
    """A fresh folder with a squad.toml whose default agent is `true`, and the env to run squad there.

    `sandbox`: the `[sandbox] kind` written (None: the default); `src`: the squad sources to run
    (another checkout's `src` for a before/after in the same run)."""
    import os
    import time

    work = tmp / f"squad-{time.time_ns()}"
    work.mkdir()
    toml = 'default_agent = "noop"\n[agents.noop]\ncommand = ["true"]\nprompt = "arg"\nparser = "plain"\n'
    if sandbox is not None:
        toml += f'[sandbox]\nkind = "{sandbox}"\n'
    (work / "squad.toml").write_text(toml)
    src = src or Path(__file__).resolve().parent.parent / "src"
    env = {**os.environ, "SQUAD_REDIS_URL": url, "SQUAD_DATABASE_URL": f"sqlite:///{work / 'squad.db'}",
           "PYTHONPATH": str(src), "SQUAD_WORKDIR": str(work / "w")}
    return work, cached_bytecode(env, tmp / "pycache")
