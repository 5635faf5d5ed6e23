"""The `squad` command as the user runs it: a real subprocess with the test's environment, a backlog file to import."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path


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
