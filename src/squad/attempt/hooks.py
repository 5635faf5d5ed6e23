"""Hooks (`after_create`, `before_run`, `after_run`, and `after_approve`, `after_land`): short argv
commands around an attempt, run inside the card's sandbox (`card_sandbox`, docs/security.md).

A hook runs in its own process group so a timeout ends everything it started (a `sh -c 'sleep
1000 &'` included), and only the tail of its output is kept: a hook that prints gigabytes costs
a bounded amount of memory and log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from squad.agents import orphans
from squad.agents.presets import agent_for
from squad.agents.runner import spawn_wrapper
from squad.agents.sandbox import Sandbox, config_for, for_command, init_of, read_init, reap_init, signal_inside
from squad.core.cards import Card
from squad.core.errors import SquadError
from squad.core.settings import SandboxConfig, Settings

__all__ = ["HOOK_OUTPUT_MAX_BYTES", "HOOK_OUTPUT_MAX_LINES", "card_sandbox", "card_sandbox_config", "run_hook"]

HOOK_OUTPUT_MAX_BYTES = 64 * 1024  # per stream: only the tail is kept
HOOK_OUTPUT_MAX_LINES = 50  # lines of each stream copied into the attempt's log
HOOK_KILL_GRACE_S = 2.0
READ_CHUNK_BYTES = 64 * 1024
READER_JOIN_S = 5.0

LineSink = Callable[[str, str], None]  # (level, message)


class _Tail:
    """The last HOOK_OUTPUT_MAX_BYTES of a pipe, and how many bytes came before them."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.dropped = 0

    def read_all(self, fd: int) -> None:
        with contextlib.suppress(OSError):
            while chunk := os.read(fd, READ_CHUNK_BYTES):
                self.data += chunk
                extra = len(self.data) - HOOK_OUTPUT_MAX_BYTES
                if extra > 0:
                    del self.data[:extra]
                    self.dropped += extra


def _end_group(pgid: int, proc: subprocess.Popen[bytes], *, sandboxed: bool = False,
               init: tuple[int, int] | None = None) -> None:
    """SIGTERM the whole group, then SIGKILL whatever is left after a short grace.

    In a sandbox the group's leader is bwrap (which ends everything at once when signalled): the
    SIGTERM goes to the processes inside instead, as for an agent (squad.agents.runner). `init`:
    the sandbox's, as bwrap reported it (else looked up while bwrap runs)."""
    if init is None and sandboxed and proc.poll() is None:
        init = init_of(proc.pid)
    if not (init is not None and proc.poll() is None and signal_inside(proc.pid, signal.SIGTERM)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=HOOK_KILL_GRACE_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    if init is not None:  # bwrap leaves before its init: it may be re-parented to us
        reap_init(*init, timeout_s=HOOK_KILL_GRACE_S)


def card_sandbox_config(settings: Settings, card: Card) -> SandboxConfig:
    """The sandbox settings of the card's attempts (`[sandbox]`, its agent's own table and preset
    paths): what its hooks and verify run with outside an attempt too (approval, landing)."""
    try:
        _name, agent = agent_for(settings, card.agent, card.squad)
    except SquadError:  # an agent no longer configured: the global settings still hold
        return settings.sandbox
    return config_for(settings, agent)


def card_sandbox(settings: Settings, card: Card, argv: list[str], *, workdir: Path, env: dict[str, str],
                 git_dir: Path | None, log: LineSink | None = None) -> Sandbox:
    """The sandbox of one command of `card` outside its attempt (`after_approve`, `after_land`, a
    landing's verify) working in `workdir`, the repository's `git_dir` writable (SandboxError when
    bwrap is asked for and cannot run); `log` gets its egress proxy's refusals. The caller closes it."""
    return for_command(card_sandbox_config(settings, card), argv, workdir=workdir, env=env, git_dir=git_dir,
                       log=log)


def run_hook(name: str, argv: list[str] | None, *, cwd: Path, env: dict[str, str], timeout_s: float,
             on_line: LineSink, sandbox: Sandbox | None = None) -> str | None:
    """Run one hook to its end (or its timeout); its output tail goes to `on_line`; an error text or None.

    `env` is the complete environment (already scrubbed of secrets by the caller).
    """
    if not argv:
        return None
    sandboxed = sandbox is not None and bool(sandbox.prefix)
    report = os.pipe() if sandboxed else None  # bwrap says which process is the sandbox's init
    try:
        if sandbox is not None and report is not None:
            sandbox = sandbox.reporting_to(report[1])
        prefix, preexec = spawn_wrapper(sandbox)  # as for agents: dies with us, cannot read our /proc
        proc = orphans.spawn(lambda: subprocess.Popen([*prefix, *argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                      start_new_session=True, preexec_fn=preexec,
                                                      pass_fds=report[1:] if report is not None else ()))
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        if report is not None:
            os.close(report[0])
        on_line("ERROR", f"hook {name} failed: {exc}")
        return f"hook {name} failed: {exc}"
    finally:
        if report is not None:
            os.close(report[1])
    try:
        init = read_init(report[0]) if report is not None else None
        return _supervise(name, proc, timeout_s, on_line, sandboxed=sandboxed, init=init)
    finally:
        orphans.unregister(proc.pid)


def _supervise(name: str, proc: subprocess.Popen[bytes], timeout_s: float, on_line: LineSink, *,
               sandboxed: bool, init: tuple[int, int] | None = None) -> str | None:
    assert proc.stdout is not None and proc.stderr is not None
    tails = {"INFO": _Tail(), "ERROR": _Tail()}
    readers = [threading.Thread(target=tails[level].read_all, args=(pipe.fileno(),), daemon=True,
                                name=f"hook-{name}-{level}")
               for level, pipe in (("INFO", proc.stdout), ("ERROR", proc.stderr))]
    for reader in readers:
        reader.start()
    error: str | None = None
    try:
        code = proc.wait(timeout=timeout_s)
        if code != 0:
            error = f"hook {name} exited with {code}"
    except subprocess.TimeoutExpired:
        error = f"hook {name} timed out after {timeout_s:g}s"
    finally:
        # The leader is gone or timed out: end its whole group, so nothing it started outlives it
        # (or keeps our pipes open).
        _end_group(proc.pid, proc, sandboxed=sandboxed, init=init)
        for reader in readers:
            reader.join(timeout=READER_JOIN_S)
        for pipe in (proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                pipe.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=READER_JOIN_S)
    for level, tail in tails.items():
        lines = tail.data.decode("utf-8", errors="replace").splitlines()
        cut = tail.dropped + sum(len(line) + 1 for line in lines[:-HOOK_OUTPUT_MAX_LINES])
        if cut:
            on_line(level, f"[{name}] …[{cut} earlier bytes not kept]")
        for text in lines[-HOOK_OUTPUT_MAX_LINES:]:
            on_line(level, f"[{name}] {text}")
    if error is not None:
        on_line("ERROR", error)
    return error
