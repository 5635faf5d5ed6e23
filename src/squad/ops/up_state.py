"""The state file of a running `squad up`: other commands in the same folder find what it started.

`squad up` may use `.squad/demo.db` and, without a Redis, an embedded one on a port of its choice;
`squad status`, `card list`, `logs` or `watch` in another shell would look elsewhere. So `squad up`
writes its effective settings to `.squad/up.json` (mode 0600: a Redis URL may hold a password) and
removes it on exit; every other command run in that folder takes from it the settings its own
environment does not set, and says so in one line.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

STATE_FILE = Path(".squad") / "up.json"
#: The settings a state file may carry (environment names).
STATE_KEYS = ("SQUAD_REDIS_URL", "SQUAD_DATABASE_URL", "SQUAD_BROKER_URL", "SQUAD_RESULT_BACKEND",
              "SQUAD_EVENTS_URL", "USE_CELERY", "SQUAD_CARDS_QUEUE", "SQUAD_MAINTENANCE_QUEUE")


def write_state(env: dict[str, str], *, api_url: str | None, path: Path = STATE_FILE) -> None:
    """Record this process's effective settings (only the keys of STATE_KEYS)."""
    data = {"pid": os.getpid(), "api_url": api_url, "env": {k: env[k] for k in STATE_KEYS if k in env}}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out)


def remove_state(path: Path = STATE_FILE) -> None:
    """Remove the file if it is ours."""
    state = read_state(path)
    if state is not None and state.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(path: Path = STATE_FILE) -> dict[str, object] | None:
    """The state of a `squad up` still running, or None (no file, unreadable, or its process is gone)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("env"), dict) or not _alive(data.get("pid")):
        return None
    return data


def apply_state(path: Path = STATE_FILE) -> list[str]:
    """Put the running `squad up`'s settings into this process's environment where it sets none;
    returns the names taken (and says so on stderr in one line)."""
    state = read_state(path)
    if state is None or state.get("pid") == os.getpid():
        return []
    env = state["env"]
    assert isinstance(env, dict)
    taken = [k for k in STATE_KEYS if k in env and k not in os.environ and isinstance(env[k], str)]
    for key in taken:
        os.environ[key] = env[key]
    if taken:
        sys.stderr.write(f"squad: using the settings of `squad up` (pid {state['pid']}) from {path}\n")
    return taken
