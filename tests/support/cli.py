"""The `squad` command as the user runs it: real subprocesses (a command, the orchestrator), a backlog file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.processes import kill_tree

PY = sys.executable


def squad_env(**values: str) -> dict[str, str]:
    """The current environment plus SQUAD settings, for subprocesses."""
    env = dict(os.environ)
    env.update(values)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m squad ARGS` as a real subprocess."""
    return subprocess.run([sys.executable, "-m", "squad", *args], capture_output=True, text=True,
                          env=env or dict(os.environ), timeout=timeout, input=input, check=False)


def ignore_sigint() -> None:
    """preexec_fn: start like a background job of a shell without job control (SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def backlog(path: Path, ids: list[str]) -> Path:
    """A backlog file of these cards, for `squad backlog import`."""
    path.write_text(json.dumps({"cards": [{"card_id": i, "title": f"deploy card {i}"} for i in ids]}))
    return path


@contextmanager
def orchestrator(env: dict[str, str], log_path: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """`squad orchestrate --mode celery` as a subprocess (it also sweeps leases and re-sends lost messages)."""
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([PY, "-m", "squad", "orchestrate", "--mode", "celery", "--interval", "0.5", *extra],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                kill_tree(proc)
