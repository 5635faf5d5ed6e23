"""Orphan adoption: the process that spawns agents is a Linux child subreaper and ends what they leave.

A process-group kill misses a grandchild that double-forked and called `setsid`: it is in no group
of ours and its parent is gone. With `PR_SET_CHILD_SUBREAPER` such a process is re-parented to the
nearest subreaper ancestor instead of PID 1, so the process that ran the agent sees it as a direct
child and can end it at the end of the attempt. `squad worker`'s supervisor is a subreaper too, so
what a dead pool process leaves (it was the subreaper of its agents) lands there and is ended.

Which attempt an adopted process belongs to: its process group, or its `SQUAD_TASK_ID` (read from
/proc/<pid>/environ, set for every agent). A process without a known marker (it scrubbed its
environment, or set one of its own) is ended only in a process that declared itself dedicated to
agents (`own_all_orphans()`: Celery pool processes, the local orchestrator), where any other child
would be a leftover; elsewhere (tests, an embedding program) children that are not clearly ours are
left alone.

Squad's own helpers (workspace `git`, hooks, agents' leaders) are known by the PIDs squad started
(`spawn`), never by an environment value an agent could set too: they are started under the same
lock a scan for leftovers holds, so no scan sees one between its fork and its record (a freshly
forked child still shows its parent's environment).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["become_subreaper", "direct_children", "end_orphans", "helper", "hide_environment",
           "own_all_orphans", "run_helper", "spawn", "unregister"]

MARKER_ENV = "SQUAD_TASK_ID"
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
_MARKER_PREFIX = (MARKER_ENV + "=").encode()
ORPHAN_POLL_S = 0.02

# Held while squad forks a child and records its pid, and while a scan picks leftovers.
_lock = threading.RLock()
_live: dict[str, int] = {}  # marker -> agent leader pid, for every attempt running in this process
_squad_pids: set[int] = set()  # every child squad started itself and has not reaped yet
_state = {"subreaper": False, "dedicated": False, "hidden": False}


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


def hide_environment() -> bool:
    """Make this process non-dumpable: other processes of the user (agents among them) can no longer
    read its /proc/<pid>/environ, memory or file descriptors, nor ptrace it. An agent's `exec` makes
    the agent itself dumpable again. True when it took effect (Linux)."""
    with _lock:
        if not _state["hidden"]:
            prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
            _state["hidden"] = prctl is not None and prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
        return _state["hidden"]


def own_all_orphans() -> None:
    """Declare this process dedicated to running agents: any child it did not spawn is a leftover."""
    _state["dedicated"] = True
    become_subreaper()
    hide_environment()


def spawn(start: Callable[[], subprocess.Popen[Any]], marker: str | None = None) -> subprocess.Popen[Any]:
    """Start a child with `start()` and record it as squad's own (with `marker`: an agent's leader).

    The pid is recorded before any scan for leftovers can run; `unregister` forgets it once reaped.
    """
    with _lock:
        proc = start()
        _squad_pids.add(proc.pid)
        if marker is not None:
            _live[marker] = proc.pid
        return proc


def unregister(pid: int, marker: str | None = None) -> None:
    """A child `spawn` started is reaped (with `marker`: its attempt is over)."""
    with _lock:
        _squad_pids.discard(pid)
        if marker is not None:
            _live.pop(marker, None)


@contextlib.contextmanager
def helper(start: Callable[[], subprocess.Popen[Any]]) -> Iterator[subprocess.Popen[Any]]:
    """`spawn` for squad's own short helpers (hooks, verify): recorded while the block runs."""
    proc = spawn(start)
    try:
        yield proc
    finally:
        unregister(proc.pid)


def run_helper(argv: list[str], *, input: bytes | None = None, timeout: float | None = None,
               **popen: Any) -> subprocess.CompletedProcess[bytes]:
    """`subprocess.run(argv, capture_output=True)` for squad's own helpers (git): the child is known
    by its pid, so the end of an attempt running in this process never takes it for a leftover."""
    stdin = subprocess.PIPE if input is not None else popen.pop("stdin", subprocess.DEVNULL)
    with helper(lambda: subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         **popen)) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except BaseException:
            proc.kill()
            proc.communicate()
            raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def has_children() -> bool:
    """Cheap test (one syscall) before a /proc scan: does this process have any child at all?"""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def direct_children(parent: int | None = None) -> list[int]:
    """Pids whose parent is `parent` (default: this process): from its threads' `children` files
    (Linux >= 3.5 with CONFIG_PROC_CHILDREN: a few small reads), else from every /proc/<pid>/stat (one
    read per process of the machine: the supervisor's check every 0.5 s cost ~10 ms on a machine
    running a few hundred processes)."""
    me = os.getpid() if parent is None else parent
    try:
        tids = os.listdir(f"/proc/{me}/task")
        kids: list[int] = []
        for tid in tids:
            with open(f"/proc/{me}/task/{tid}/children", "rb") as f:
                kids.extend(int(pid) for pid in f.read().split())
        return kids
    except (OSError, ValueError):  # no `children` files, or a thread gone meanwhile: the full scan
        pass
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
    """Called with `_lock` held: no child squad starts meanwhile is unrecorded."""
    if pid in _squad_pids:
        return False  # squad started it (an agent's leader, a hook, git): its starter ends it
    if pgid is not None and _state_and_group(pid)[1] == pgid:
        return True  # still in the attempt's group (e.g. the zombie of a killed member)
    found = marker_of(pid)
    if found == marker:
        return True
    if found is not None and found in _live:
        return False  # another attempt still running here ends its own
    return bool(_state["dedicated"])


def _victims(marker: str, pgid: int | None) -> list[int]:
    with _lock:
        return [pid for pid in direct_children() if _ours(pid, marker, pgid)]


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
        victims = _victims(marker, pgid)
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
