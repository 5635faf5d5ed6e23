"""Processes seen from outside, as the tests see real workers and agents: wait, end, check, find leftovers."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from squad.ops.embedded_redis import free_port as free_port  # re-exported: the tests' one free-port helper


def wait_for(predicate: Callable[[], object], timeout: float = 60, interval: float = 0.1,
             message: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def kill_tree(proc: subprocess.Popen[bytes] | subprocess.Popen[str], sig: int = signal.SIGTERM,
              timeout: float = 20) -> None:
    """End a process and every descendant (SIGKILL after `timeout`)."""
    try:
        parent = psutil.Process(proc.pid)
        children = parent.children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    try:
        proc.send_signal(sig)
        proc.wait(timeout=timeout)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        proc.kill()
        proc.wait(timeout=10)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def alive(pid: int) -> bool:
    """Running and not a zombie (a zombie counts as dead: this container's init never reaps orphans)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def read_pid(path: Path, timeout: float = 60) -> int:
    """The pid, as this machine sees it, of the fake agent that wrote its own to `path` (written
    whole: the agents rename a finished file). In its sandbox an agent has its own PID namespace
    and writes the pid it sees there: `host_pid` finds it through the path in its command line."""
    wait_for(path.exists, timeout, interval=0.02, message=f"pid file {path}")
    return host_pid(int(path.read_text()), str(path))


def _environ(proc: psutil.Process) -> dict[str, str]:
    """A process's environment, read again while it reads empty: in the instant a process execs (an
    agent's `sh -c '...; exec sleep'`), /proc/<pid>/environ is empty (seen in 139 of 9,000 reads of
    processes that exec at once; a cancel storm's agent was then taken for gone)."""
    for _ in range(100):
        found = proc.environ()
        if found:
            return found
        time.sleep(0.01)
    return {}


def host_pid(inner: int, named: str | None = None, env: dict[str, str] | None = None) -> int:
    """The pid on this machine of the live process whose pid in its own PID namespace is `inner`,
    whose command line names `named` (a pid file's path) or its stem (`x.pid` of `x.pid.agent`), and
    whose environment holds `env` (e.g. an agent's SQUAD_CARD_ID). Gone (or a zombie):
    `/proc/sys/kernel/pid_max`, a pid no process has: never `alive`, never signalled."""
    for proc in psutil.process_iter(["pid", "cmdline"]):
        args = proc.info["cmdline"] or []
        if named is not None and not any(arg and (named == arg or named.startswith(arg + ".")) for arg in args):
            continue
        try:
            status = Path(f"/proc/{proc.info['pid']}/status").read_text()
            nspids = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
            if not nspids or int(nspids[-1]) != inner:
                continue
            if env is not None and any(_environ(proc).get(key) != value for key, value in env.items()):
                continue
        except (OSError, psutil.Error):
            continue
        return int(nspids[0])
    return int(Path("/proc/sys/kernel/pid_max").read_text())


def leftovers(root: Path) -> list[str]:
    """Live processes (other than this one) whose cwd or command line belongs to `root`."""
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd", "status"]):
        info = proc.info
        if info["pid"] in mine or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmdline = " ".join(info["cmdline"] or [])
        if str(root) in cmdline or (info["cwd"] or "").startswith(str(root)):
            found.append(f"{info['pid']}: {cmdline[:200]}")
    return found


def no_leftovers(root: Path, timeout: float = 20) -> None:
    try:
        wait_for(lambda: not leftovers(root), timeout, interval=0.2, message="no process left")
    except AssertionError:
        raise AssertionError(f"processes left behind: {leftovers(root)}") from None
