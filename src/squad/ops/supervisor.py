"""Process supervision: restart a child that exits unexpectedly, with backoff; stop all cleanly.

Celery on Redis can exit with `Unrecoverable error` after a broker blip while a card runs, so
`squad worker` never runs its Celery worker bare, and `squad up` restarts any dead child.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO

import structlog

from squad.agents import orphans
from squad.core.constants import SUPERVISOR_BACKOFF_MAX_S, SUPERVISOR_BACKOFF_START_S

log = structlog.get_logger(__name__)
HEALTHY_AFTER_S = 30.0
STOP_TIMEOUT_S = 30.0
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A preexec_fn: Linux SIGKILLs the child when its supervisor dies, even by SIGKILL.

    A service manager that kills only the supervisor (supervisord, systemd) must not leave its
    children running in their own sessions; Celery's pool processes and the agents follow in turn.
    """
    prctl = getattr(_LIBC, "prctl", None)
    if prctl is None:  # not Linux
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
            os._exit(1)

    return preexec


@dataclass
class Child:
    """One supervised command."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    stdout: IO[bytes] | None = None
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    # Exit code 0 means "done on purpose" (e.g. a drained Celery worker): stop, do not restart.
    final_on_success: bool = False
    started_at: float = 0.0
    next_start: float = 0.0
    backoff: float = SUPERVISOR_BACKOFF_START_S

    def start(self) -> None:
        """Spawn in its own process group so a terminal Ctrl-C reaches it only through us."""
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=self.stdout,
                                     stderr=subprocess.STDOUT if self.stdout else None,
                                     start_new_session=True, preexec_fn=_die_with_parent(os.getpid()))
        self.started_at = time.monotonic()
        log.info("started", child=self.name, pid=self.proc.pid)


class Supervisor:
    """Keeps children running until stopped; restarts with exponential backoff.

    With `adopt_orphans` it is a child subreaper: a pool process that dies (hard time limit,
    kill -9) hands what it adopted from its agents to us, and every process we did not start
    ourselves is ended at the next check.
    """

    def __init__(self, children: Sequence[Child], *, stop_timeout_s: float = STOP_TIMEOUT_S,
                 adopt_orphans: bool = False) -> None:
        self.children = list(children)
        self.stopping = threading.Event()
        self.stop_timeout_s = stop_timeout_s
        self.adopt_orphans = adopt_orphans and orphans.become_subreaper()
        orphans.hide_environment()  # an ancestor of agents: its secrets stay out of their /proc reads
        self.orphans_ended = 0
        self.stopped_by: int | None = None  # the signal that stopped us, if one did

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM stop everything cleanly."""
        def handler(signum: int, _frame: object) -> None:
            log.info("stopping", signal=signal.Signals(signum).name)
            if self.stopped_by is None:
                self.stopped_by = signum
            self.stopping.set()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def run(self, poll_s: float = 0.5, on_tick: Callable[[], None] | None = None) -> int:
        """Supervise until stopped (calling `on_tick` after each check); returns 0."""
        for child in self.children:
            child.start()
        while not self.stopping.wait(poll_s):
            self.check()
            if on_tick is not None:
                on_tick()
        self.stop()
        return 0

    def check(self) -> None:
        """Restart children that exited; end adopted orphans."""
        if self.adopt_orphans:
            self.end_adopted()
        now = time.monotonic()
        for child in self.children:
            proc = child.proc
            if proc is not None and proc.poll() is None:
                if now - child.started_at > HEALTHY_AFTER_S:
                    child.backoff = SUPERVISOR_BACKOFF_START_S
                continue
            if proc is not None and proc.returncode == 0 and child.final_on_success:
                log.info("child finished; stopping", child=child.name)
                child.proc = None
                self.stopping.set()
                return
            if proc is not None:
                log.warning("child exited; restarting", child=child.name, code=proc.returncode,
                            backoff_s=child.backoff)
                child.proc = None
                child.next_start = now + child.backoff
                child.backoff = min(child.backoff * 2, SUPERVISOR_BACKOFF_MAX_S)
            if now >= child.next_start:
                child.restarts += 1
                child.start()

    def end_adopted(self) -> None:
        """SIGKILL and reap every direct child that is not one of ours (a dead worker's leftovers)."""
        if not orphans.has_children():
            return
        ours = {child.proc.pid for child in self.children if child.proc is not None}
        for pid in orphans.direct_children():
            if pid in ours:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                self.orphans_ended += 1
                log.warning("ended a process left by a dead worker process", pid=pid)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # not reaped yet: the next check finds its zombie

    def stop(self) -> None:
        """SIGTERM every child (warm shutdown), SIGKILL its group after a timeout."""
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.terminate()
        deadline = time.monotonic() + self.stop_timeout_s
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("child did not stop; killing", child=child.name)
            try:
                os.killpg(child.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            child.proc.wait(timeout=10)
