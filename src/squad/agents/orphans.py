"""Orphan adoption: the process that spawns agents is a Linux child subreaper and ends what they leave.

A process-group kill misses a grandchild that double-forked and called `setsid`: it is in no group
of ours and its parent is gone. With `PR_SET_CHILD_SUBREAPER` such a process is re-parented to the
nearest subreaper ancestor instead of PID 1, so the process that ran the agent sees it as a direct
child and can end it at the end of the attempt. `squad worker`'s supervisor is a subreaper too, so
what a dead pool process leaves (it was the subreaper of its agents) lands there and is ended.

Which attempt an adopted process belongs to: its `SQUAD_TASK_ID` (read from /proc/<pid>/environ, set
for every agent). A process without a known marker (it scrubbed its environment) is ended only in a
process that declared itself dedicated to agents (`own_all_orphans()`: Celery pool processes, the
local orchestrator), where any other child would be a leftover; elsewhere (tests, an embedding
program) children that are not clearly ours are left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time

__all__ = ["HELPER_MARKER", "become_subreaper", "direct_children", "end_orphans", "own_all_orphans", "register",
           "unregister"]

MARKER_ENV = "SQUAD_TASK_ID"
# The marker of squad's own helper processes (git for workspaces): in a process that runs several
# attempts at once (local mode), the end of one attempt must not take another's `git worktree add`
# for an agent's leftover.
HELPER_MARKER = "squad-helper"
_PR_SET_CHILD_SUBREAPER = 36
_MARKER_PREFIX = (MARKER_ENV + "=").encode()
ORPHAN_POLL_S = 0.02

_lock = threading.Lock()
_live: dict[str, int] = {}  # marker -> agent leader pid, for every attempt running in this process
_state = {"subreaper": False, "dedicated": False}


def become_subreaper() -> bool:
    """Make this process adopt orphaned descendants (Linux); True when it is a subreaper."""
    with _lock:
        if _state["subreaper"]:
            return True
        prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
        if prctl is None:
            return False
        _state["subreaper"] = prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        return _state["subreaper"]


def own_all_orphans() -> None:
    """Declare this process dedicated to running agents: any child it did not spawn is a leftover."""
    _state["dedicated"] = True
    become_subreaper()


def register(marker: str, pid: int) -> None:
    """An agent started in this process (its adopted descendants carry `marker`)."""
    with _lock:
        _live[marker] = pid


def unregister(marker: str) -> None:
    """The attempt is over: its leader is reaped."""
    with _lock:
        _live.pop(marker, None)


def has_children() -> bool:
    """Cheap test (one syscall) before a /proc scan: does this process have any child at all?"""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def direct_children(parent: int | None = None) -> list[int]:
    """Pids whose parent is `parent` (default: this process), from /proc/<pid>/stat."""
    me = os.getpid() if parent is None else parent
    found: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # the command name may contain spaces or ')'
        if len(fields) > 1 and int(fields[1]) == me:
            found.append(int(entry.name))
    return found


def marker_of(pid: int) -> str | None:
    """The `SQUAD_TASK_ID` a process was started with (None if unreadable or absent)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:
        return None
    for item in environ.split(b"\0"):
        if item.startswith(_MARKER_PREFIX):
            return item[len(_MARKER_PREFIX):].decode(errors="replace")
    return None


def _state_and_group(pid: int) -> tuple[bytes, int]:
    """(state letter, process group) from /proc/<pid>/stat; a zombie keeps its group there."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return b"X", -1
    fields = stat[stat.rfind(b")") + 2:].split()
    return fields[0], int(fields[2])


def _ours(pid: int, marker: str, pgid: int | None) -> bool:
    with _lock:
        if pid in _live.values():
            return False  # the leader of a running attempt: its own runner ends it
        live = set(_live)
    if pgid is not None and _state_and_group(pid)[1] == pgid:
        return True  # still in the attempt's group (e.g. the zombie of a killed member)
    found = marker_of(pid)
    if found == marker:
        return True
    if found is not None and (found in live or found == HELPER_MARKER):
        return False  # another attempt still running here ends its own; squad's own helpers are not leftovers
    return bool(_state["dedicated"])


def end_orphans(marker: str, timeout_s: float, pgid: int | None = None) -> int:
    """SIGKILL every adopted process of the attempt `marker` and reap it, until none is left.

    Killing an orphan hands its own children to us, so this repeats until a scan finds nothing.
    Returns how many processes were ended.
    """
    if not _state["subreaper"] or not has_children():
        return 0
    deadline = time.monotonic() + timeout_s
    ended = 0
    while True:
        victims = [pid for pid in direct_children() if _ours(pid, marker, pgid)]
        if not victims:
            return ended
        for pid in victims:
            if _state_and_group(pid)[0] not in (b"Z", b"X"):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                    ended += 1
        for pid in victims:  # reaping them is what makes their children ours in turn
            while True:
                try:
                    done, _status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if done or time.monotonic() >= deadline:
                    break
                time.sleep(ORPHAN_POLL_S)
        if time.monotonic() >= deadline:
            return ended


def reap_zombies(pgid: int) -> None:
    """Reap adopted members of the group `pgid` that already died (they keep the group alive)."""
    if not _state["subreaper"] or not has_children():
        return
    for pid in direct_children():
        state, group = _state_and_group(pid)
        if state == b"Z" and group == pgid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
