"""Spawn one agent and supervise it: stream its lines, apply the limits, end its whole process tree.

Whatever the agent does wrong (crash, hang, flood, giant lines, orphaned grandchildren that ignore
SIGTERM) becomes an `AgentResult`; only caller bugs propagate, and even then the group is ended first.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import re
import resource
import selectors
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from squad.agents import orphans
from squad.agents.parsers import ProgressParser
from squad.agents.prompts import write_prompt_file
from squad.agents.sandbox import Sandbox, init_of, read_init, reap_init, signal_inside
from squad.core.cards import Usage
from squad.core.constants import CANCEL_POLL_S, KILL_GRACE_S, LOG_LINE_MAX_BYTES, MAX_LINE_BYTES
from squad.core.settings import AgentConfig, AgentRlimits

__all__ = ["AgentResult", "Limits", "PausingObserver", "RunObserver", "build_command", "expand_argv", "run_agent",
           "spawn_wrapper"]

#: placeholders of agent argv items, and of hook argv (`after_land`: branch, landed_commit, card_id)
PLACEHOLDERS = ("card_id", "agent", "prompt_file", "workdir", "attempt", "session_id", "branch", "landed_commit")
ESTIMATE_AFTER_S = 5.0  # no real progress for this long: the time-based estimate may take over
ESTIMATE_EVERY_S = 1.0
READ_CHUNK_BYTES = 64 * 1024
STDIN_CHUNK_BYTES = 64 * 1024
DRAIN_TIMEOUT_S = 2.0  # after the agent is gone, how long to wait for the rest of its output
KILL_POLL_S = 0.05
KILL_CONFIRM_S = 2.0

_PR_SET_PDEATHSIG = 1
_PR_CAPBSET_DROP = 24
_CAP_SETPCAP = 8
_DROPPED_CAPS = "-sys_ptrace,-sys_admin,-perfmon"  # what lets a process read a non-dumpable one's /proc
_DROPPED_CAP_NUMBERS = (19, 21, 38)  # CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_PERFMON
_PLACEHOLDER_RE = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
_PRCTL: Any = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # loaded before any fork
_TOOL_PATH = "/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin"  # util-linux helpers, never the agent's PATH
_BWRAP_DIES_WITH_PARENT = "--die-with-parent"
_PRLIMIT_FLAGS = {resource.RLIMIT_AS: "as", resource.RLIMIT_NOFILE: "nofile",
                  resource.RLIMIT_NPROC: "nproc", resource.RLIMIT_FSIZE: "fsize"}


@dataclass
class Limits:
    """Per-attempt limits in seconds; a stall timeout of 0 means no stall detection."""

    soft_time_limit_s: float
    time_limit_s: float
    stall_timeout_s: float = 0.0
    kill_grace_s: float = KILL_GRACE_S


class RunObserver(Protocol):
    """What the caller sees of a running agent; it also decides when to stop it (cancel)."""

    def on_line(self, level: str, message: str) -> None:
        """One log line: level INFO (stdout) or ERROR (stderr)."""

    def on_progress(self, progress: int, step: str) -> None:
        """Progress or step changed (unthrottled: the caller throttles)."""

    def stop_reason(self) -> str | None:
        """Polled every CANCEL_POLL_S; a text (e.g. "cancelled") ends the agent."""


@runtime_checkable
class PausingObserver(RunObserver, Protocol):
    """An observer that can also stop the clocks: while the agent waits for a person (`ask_human`,
    docs/agents.md) neither the time limits nor the stall timer run."""

    def paused_s(self) -> float:
        """Seconds the clocks stood still so far (a wait still going on included)."""

    def active_at(self) -> float:
        """`time.monotonic()` of the agent's last sign of life outside its output (a tool call), or 0."""


#: How an agent ended: by itself (succeeded/failed, as its parser judged), or by a limit or a cancel.
AgentOutcome = Literal["succeeded", "failed", "soft_timeout", "timeout", "stalled", "cancelled", "spawn_failed"]


@dataclass
class AgentResult:
    """How an attempt's agent ended; `error` is None only when it succeeded."""

    outcome: AgentOutcome
    exit_code: int | None
    error: str | None
    usage: Usage


def expand_argv(items: list[str], values: dict[str, str]) -> list[str]:
    """Fill `{card_id}`-style placeholders inside argv items, in one pass (values are never re-expanded).

    Unknown braces stay as they are: the argv goes to exec, never to a shell.
    """

    def fill(match: re.Match[str]) -> str:
        return values.get(match.group(1), match.group(0))

    return [_PLACEHOLDER_RE.sub(fill, item) for item in items]


def build_command(
    agent: AgentConfig,
    *,
    agent_name: str,
    card_id: str,
    workdir: Path,
    attempt: int,
    prompt: str,
    prompt_file: Path,
    resume_session_id: str | None,
    keep_prompt: bool = False,
) -> tuple[list[str], bytes | None]:
    """The argv and stdin bytes of one attempt.

    The prompt file is written, in every mode, when the argv names `{prompt_file}` (so it always
    points at the prompt), with `prompt = "file"`, or when it may be kept (`keep_prompt`:
    `keep_prompts` keeps a failed attempt's); otherwise nothing reads it (`GET
    /api/cards/{id}/prompt` renders it again, docs/security.md "Prompt files"), and writing and
    removing it cost more than running `true`.
    Resume items are added only when a previous attempt left a session id and the agent can resume.
    """
    resume = agent.resume if resume_session_id and agent.resume else []
    if keep_prompt or agent.prompt == "file" or any("{prompt_file}" in item for item in [*agent.command, *resume]):
        write_prompt_file(prompt_file, prompt)
    values = {
        "card_id": card_id,
        "agent": agent_name,
        "prompt_file": str(prompt_file),
        "workdir": str(workdir),
        "attempt": str(attempt),
    }
    argv = expand_argv(agent.command, values)
    if resume:
        argv += expand_argv(resume, {**values, "session_id": resume_session_id or ""})
    if agent.prompt == "arg":
        argv.append(prompt)
    stdin_data = prompt.encode("utf-8") if agent.prompt == "stdin" else None
    return argv, stdin_data


def run_agent(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    stdin_data: bytes | None,
    parser: ProgressParser,
    limits: Limits,
    observer: RunObserver,
    rlimits: AgentRlimits | None = None,
    sandbox: Sandbox | None = None,
) -> AgentResult:
    """Run one agent to its end and report how it ended (inside `sandbox` when given).

    Spawned from the calling thread on purpose: the parent-death signal fires when the spawning
    *thread* ends, so the agent lives exactly as long as this call (or dies with the worker). The
    same thread supervises it (one selector over the pipes and a pidfd): no helper thread.
    """
    started = time.monotonic()
    full_env = dict(env)  # complete: the caller scrubbed it (squad.attempt.agent_env), nothing else is inherited
    marker = full_env.setdefault(orphans.MARKER_ENV, f"run-{uuid.uuid4().hex}")
    orphans.become_subreaper()
    orphans.hide_environment()  # the agent must not read our secrets from /proc/$PPID/environ
    sandboxed = sandbox is not None and bool(sandbox.prefix)
    report = os.pipe() if sandboxed else None  # bwrap says which process is the sandbox's init
    try:
        program = _resolve(argv[0], cwd, full_env.get("PATH", os.defpath))
        if sandbox is not None and report is not None:
            sandbox = sandbox.reporting_to(report[1])
        wrapper, preexec = _wrapper(rlimits, sandbox)
        proc = orphans.spawn(lambda: subprocess.Popen(
            [*wrapper, *(sandbox.prefix if sandbox is not None else []), program, *argv[1:]],
            shell=False,
            start_new_session=True,  # own session and group: no terminal signals, one group to kill
            cwd=cwd,
            env=full_env,
            stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=preexec,  # None unless setpriv/prlimit are missing: then a full fork
            pass_fds=report[1:] if report is not None else (),
        ), marker)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        if report is not None:
            os.close(report[0])
        return AgentResult(
            outcome="spawn_failed",
            exit_code=None,
            error=f"cannot start agent: {_describe(exc)}",
            usage=parser.usage,
        )
    finally:
        if report is not None:
            os.close(report[1])
    try:
        watch = _AgentWatch(proc, stdin_data, parser, limits, observer, started, marker, sandboxed=sandboxed)
        if report is not None:
            watch.sandbox_init = read_init(report[0])
        return watch.run()
    finally:
        orphans.unregister(proc.pid, marker)


# ---- spawning helpers ---------------------------------------------------------------------------
def _resolve(program: str, cwd: Path, path: str) -> str:
    """The executable the agent's argv[0] names, checked here because the wrapper would only exit 127.

    Relative paths with a slash are relative to the agent's cwd, as exec in the child would see them.
    """
    if not cwd.is_dir():
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(cwd))
    if os.sep in program:
        candidate = program if os.path.isabs(program) else str(cwd / program)
        if not os.path.exists(candidate):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", program)
        if os.path.isdir(candidate) or not os.access(candidate, os.X_OK):
            raise PermissionError(errno.EACCES, "Permission denied", program)
        return candidate
    found = shutil.which(program, path=path)
    if found is None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", program)
    return found if os.path.isabs(found) else str(Path(found).resolve())


def _wrapper(rlimits: AgentRlimits | None,
             sandbox: Sandbox | None = None) -> tuple[list[str], Callable[[], None] | None]:
    """An exec prefix that sets the parent-death signal (and rlimits) inside the child.

    Popen with a `preexec_fn` must fully fork the worker (~3.6 ms in a worker-sized process, more
    when the machine is busy); without one it uses vfork (~1 ms), and util-linux's `setpriv`
    (`prlimit` for rlimits) makes the same calls after exec. Where they are missing, fall back to
    the preexec_fn: slower, same guarantees. The window between exec and setpriv's prctl (a worker
    dying in that millisecond) is covered by the subreaper chain (see `squad.agents.orphans`).
    A bwrap sandbox sets the signal itself (`--die-with-parent`, on bwrap and on the agent): no setpriv.
    """
    limits = rlimits.as_resource_limits() if rlimits is not None else []
    join = sandbox.preexec() if sandbox is not None else None
    if sandbox is not None:
        limits = [(res, value) for res, value in limits if res not in dict(sandbox.rlimits)] + sandbox.rlimits
    setpriv = _tool("setpriv")
    prlimit = _tool("prlimit") if limits else None
    # bwrap needs its capabilities to build the namespaces; it drops every one for what runs inside
    drop_caps = _can_drop_caps() and not (sandbox is not None and sandbox.prefix)
    if _PRCTL is None:  # not Linux: no parent-death signal at all
        return [], _preexec(None, limits, join, drop_caps) if limits or join else None
    if setpriv is None or (limits and prlimit is None) or join is not None:  # cgroups are joined before exec
        return [], _preexec(os.getpid(), limits, join, drop_caps)
    prefix: list[str] = []
    if limits and prlimit is not None:
        prefix = [prlimit, *(f"--{_PRLIMIT_FLAGS[res]}={value}" for res, value in limits), "--"]
    if sandbox is not None and _BWRAP_DIES_WITH_PARENT in sandbox.prefix and not drop_caps:
        # bwrap --die-with-parent sets the same parent-death signal (SIGKILL) on itself and on what it
        # runs: setpriv would be one more exec of a program per attempt for nothing
        return prefix, None
    drop = [f"--inh-caps={_DROPPED_CAPS}", f"--bounding-set={_DROPPED_CAPS}"] if drop_caps else []
    return [*prefix, setpriv, *drop, "--pdeathsig", "KILL", "--"], None


def spawn_wrapper(sandbox: Sandbox | None = None) -> tuple[list[str], Callable[[], None] | None]:
    """The exec prefix (or preexec_fn) agents get, for other commands of an attempt (hooks): with
    the attempt's sandbox, its argv prefix included."""
    prefix, preexec = _wrapper(None, sandbox)
    return [*prefix, *(sandbox.prefix if sandbox is not None else [])], preexec


@functools.cache
def _can_drop_caps() -> bool:
    """Whether this process may drop capabilities from a child's bounding set (CAP_SETPCAP, e.g. root).

    A non-dumpable parent hides its /proc/<pid>/environ from processes of its user, except from one
    holding CAP_SYS_PTRACE, CAP_SYS_ADMIN or CAP_PERFMON (each let a root agent read it, measured on
    Linux 6.18): a worker running as root (a container) would give its agents every capability, so
    they lose these three (squad.agents.orphans.hide_environment is the other half).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            effective = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return False
    return bool(effective & (1 << _CAP_SETPCAP))


@functools.cache
def _tool(name: str) -> str | None:
    """Absolute path of a util-linux helper, looked up once per process."""
    return shutil.which(name, path=_TOOL_PATH)


def _preexec(parent_pid: int | None, limits: list[tuple[int, int]], join: Callable[[], None] | None = None,
             drop_caps: bool = False) -> Callable[[], None]:
    """The fallback preexec_fn: cgroups, rlimits, then SIGKILL the child when the spawning thread dies."""
    sigkill = int(signal.SIGKILL)

    def preexec() -> None:
        if join is not None:
            join()
        for res, value in limits:
            resource.setrlimit(res, (value, value))
        if drop_caps and _PRCTL is not None:
            for cap in _DROPPED_CAP_NUMBERS:
                _PRCTL(_PR_CAPBSET_DROP, cap, 0, 0, 0)
        if parent_pid is not None and _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
            if os.getppid() != parent_pid:  # the parent died before prctl took effect
                os.kill(os.getpid(), sigkill)

    return preexec


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def _seconds(value: float) -> str:
    """1700.0 -> "1700", 2.5 -> "2.5": how limits read in error texts."""
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}".rstrip("0")


# ---- reading output -----------------------------------------------------------------------------
class _LineSplitter:
    """Split a pipe's chunks into lines without ever holding more than MAX_LINE_BYTES of one line.

    A longer line keeps its head and the count of bytes thrown away up to its newline. The bound is
    what one JSON event may weigh and still be parsed (a Claude image tool result is hundreds of KB);
    what is logged of a line is cut much shorter (`_excerpt`).
    """

    def __init__(self) -> None:
        self.line = bytearray()
        self.head: bytes | None = None
        self.dropped = 0

    def feed(self, chunk: bytes) -> list[tuple[bytes, int]]:
        batch: list[tuple[bytes, int]] = []
        start = 0
        while start <= len(chunk):
            newline = chunk.find(b"\n", start)
            end = newline if newline >= 0 else len(chunk)
            if self.head is not None:
                self.dropped += end - start
            else:
                self.line += chunk[start:end]
                if len(self.line) > MAX_LINE_BYTES:
                    self.head = bytes(self.line[:MAX_LINE_BYTES])
                    self.dropped = len(self.line) - MAX_LINE_BYTES
                    self.line = bytearray()
            if newline < 0:
                break
            batch.append((self.head if self.head is not None else bytes(self.line), self.dropped))
            self.line, self.head, self.dropped = bytearray(), None, 0
            start = newline + 1
        return batch

    def rest(self) -> list[tuple[bytes, int]]:
        """The unterminated last line, if any."""
        if self.head is None and not self.line:
            return []
        last = (self.head if self.head is not None else bytes(self.line), self.dropped)
        self.line, self.head, self.dropped = bytearray(), None, 0
        return [last]


def _excerpt(message: str, raw: bytes | None, dropped: int) -> str:
    """What the log keeps of one line: at most LOG_LINE_MAX_BYTES, then the count of bytes cut.

    `raw` is the line as read when the message is that line (the count is then exact without
    encoding the text again); `dropped` the bytes the splitter already threw away.
    """
    if not dropped and len(message) <= LOG_LINE_MAX_BYTES // 4:  # at most 4 bytes a character: fits
        return message
    data = raw if raw is not None else message.encode("utf-8", errors="replace")
    if not dropped and len(data) <= LOG_LINE_MAX_BYTES:
        return message
    head = data[:LOG_LINE_MAX_BYTES].decode("utf-8", errors="ignore")  # a character cut in two goes too
    cut = len(data) - len(head.encode("utf-8", errors="replace")) + dropped
    return f"{head} …[truncated {cut} bytes]"


class _ExitWatch:
    """Readable once the agent exits, without reaping it: a pidfd, else a waiter thread and a pipe."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.thread: threading.Thread | None = None
        self.write_fd = -1
        try:
            self.fd = os.pidfd_open(pid)
        except (AttributeError, OSError):  # not Linux >= 5.3
            self.fd, self.write_fd = os.pipe()
            self.thread = threading.Thread(target=self._wait, name=f"agent-{pid}-wait", daemon=True)
            self.thread.start()

    def _wait(self) -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        with contextlib.suppress(OSError):
            os.write(self.write_fd, b"x")

    def close(self) -> None:
        for fd in (self.fd, self.write_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.fd = self.write_fd = -1


# ---- supervision --------------------------------------------------------------------------------
class _AgentWatch:
    """The state of one running agent, driven entirely by the calling thread."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        stdin_data: bytes | None,
        parser: ProgressParser,
        limits: Limits,
        observer: RunObserver,
        started: float,
        marker: str,
        *,
        sandboxed: bool = False,
    ) -> None:
        self.proc = proc
        self.sandboxed = sandboxed  # the leader is bwrap: the agent and its children are inside
        self.sandbox_init: tuple[int, int] | None = None  # its init's pid and PID namespace, once seen
        self.pgid = proc.pid  # start_new_session: the agent leads its own group
        self.parser = parser
        self.limits = limits
        self.observer = observer
        self.pausing = observer if isinstance(observer, PausingObserver) else None  # checked once
        self.started = started
        self.marker = marker
        self.exited = False
        self.returncode: int | None = None
        self.last_activity = started
        self.reported = (parser.progress, parser.step)
        self.last_real_progress = started
        self.selector = selectors.DefaultSelector()
        self.splitters: dict[str, _LineSplitter] = {}
        self.stdin_view = memoryview(stdin_data or b"")
        self.exit_watch = _ExitWatch(proc.pid)
        self.selector.register(self.exit_watch.fd, selectors.EVENT_READ, "exit")
        for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            assert pipe is not None  # both are PIPE
            self.selector.register(pipe.fileno(), selectors.EVENT_READ, name)
            self.splitters[name] = _LineSplitter()
        if stdin_data is not None and proc.stdin is not None:
            os.set_blocking(proc.stdin.fileno(), False)
            self.selector.register(proc.stdin.fileno(), selectors.EVENT_WRITE, "stdin")

    @property
    def open_streams(self) -> bool:
        return any(key.data in ("stdout", "stderr") for key in self.selector.get_map().values())

    def run(self) -> AgentResult:
        """Supervise to the end; whatever happens, the agent's processes are gone on return."""
        ended = False
        try:
            outcome, error = self._supervise()
            if outcome == "timeout":
                self._end(grace_s=0.0)
            elif outcome is not None:
                remaining = self.started + self.limits.time_limit_s - time.monotonic()
                self._end(grace_s=max(0.0, min(self.limits.kill_grace_s, remaining)))
            else:
                self._end(grace_s=self.limits.kill_grace_s)
            ended = True
            self._drain()
            exit_code = self._reap(block=True) if self.returncode is None else self.returncode
            assert exit_code is not None  # a blocking reap always yields a status
            if outcome is None:
                error = self.parser.verdict(exit_code)
                outcome = "succeeded" if error is None else "failed"
            return AgentResult(
                outcome=outcome,
                exit_code=exit_code,
                error=error,
                usage=self.parser.usage,
            )
        finally:
            if not ended:  # a caller bug or an exception raised into us (e.g. a Celery soft limit)
                self._end(grace_s=self.limits.kill_grace_s)
            self._close()

    def _paused(self) -> float:
        """Seconds the observer stopped the clocks so far; also takes its latest sign of life."""
        observer = self.pausing
        if observer is None:
            return 0.0
        self.last_activity = max(self.last_activity, observer.active_at())
        return observer.paused_s()

    def _supervise(self) -> tuple[AgentOutcome | None, str | None]:
        """Consume output until the agent exits (None, None) or a limit ends it (outcome, error)."""
        limits = self.limits
        next_poll = self.started
        next_estimate = self.started + ESTIMATE_AFTER_S
        paused = paused_at_activity = 0.0
        activity = self.last_activity
        while True:
            now = time.monotonic()
            # Time waiting for a person counts toward neither the limits nor the stall timer.
            paused = self._paused()
            if self.last_activity != activity:
                activity, paused_at_activity = self.last_activity, paused
            soft_at = self.started + limits.soft_time_limit_s + paused
            hard_at = self.started + limits.time_limit_s + paused
            if now >= hard_at:
                return "timeout", f"time limit exceeded ({_seconds(limits.time_limit_s)}s)"
            if now >= soft_at:
                return "soft_timeout", f"soft time limit exceeded ({_seconds(limits.soft_time_limit_s)}s)"
            stall_at = self.last_activity + limits.stall_timeout_s + (paused - paused_at_activity)
            if limits.stall_timeout_s > 0 and now >= stall_at:
                return "stalled", "stalled"
            if now >= next_poll:
                next_poll = now + CANCEL_POLL_S
                if self.sandboxed and self.sandbox_init is None:
                    self.sandbox_init = init_of(self.proc.pid)
                reason = self.observer.stop_reason()
                if reason is not None:
                    return "cancelled", reason
            if now >= next_estimate:
                next_estimate = now + ESTIMATE_EVERY_S
                self._estimate(now)
            wake = min(hard_at, soft_at, next_poll, next_estimate)
            if limits.stall_timeout_s > 0:
                wake = min(wake, stall_at)
            if self._pump(max(0.001, wake - now)):
                return None, None

    def _pump(self, timeout_s: float) -> bool:
        """One select round: read output, feed stdin; True once the agent has exited."""
        for key, _mask in self.selector.select(timeout_s):
            name = key.data
            if name == "exit":
                self.selector.unregister(key.fd)
                self.exited = True
            elif name == "stdin":
                self._feed_stdin(key.fd)
            else:
                self._read(key.fd, name)
        return self.exited

    def _read(self, fd: int, name: str) -> None:
        try:
            chunk = os.read(fd, READ_CHUNK_BYTES)
        except OSError:
            chunk = b""
        if not chunk:
            self.selector.unregister(fd)
            self._handle(name, self.splitters[name].rest())
            return
        self.last_activity = time.monotonic()
        self._handle(name, self.splitters[name].feed(chunk))

    def _feed_stdin(self, fd: int) -> None:
        """Write what the pipe takes now; an agent that stops reading is not an error."""
        try:
            written = os.write(fd, self.stdin_view[:STDIN_CHUNK_BYTES])
            self.stdin_view = self.stdin_view[written:]
            if self.stdin_view:
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        self._close_stdin()

    def _close_stdin(self) -> None:
        stdin = self.proc.stdin
        if stdin is None or stdin.closed:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(stdin.fileno())
        with contextlib.suppress(OSError):
            stdin.close()

    def _handle(self, stream: str, lines: list[tuple[bytes, int]]) -> None:
        # stderr is not an error by itself (agents print progress and warnings there): its own level.
        level = "INFO" if stream == "stdout" else "STDERR"
        feed, on_line = self.parser.feed, self.observer.on_line
        for data, dropped in lines:
            text = data.decode("utf-8", errors="replace")
            if text.endswith("\r"):
                text = text[:-1]
            result = feed(text, stream)
            on_line(result.level or level, _excerpt(result.message, data if result.message is text else None,
                                                    dropped))
            for warning in result.warnings:  # fields the parser dropped or clamped
                on_line("WARNING", warning)
            if result.progress is not None:
                if result.progress > self.reported[0]:
                    self.last_real_progress = time.monotonic()
                self._report(result.progress, result.step or self.parser.step)

    def _report(self, progress: int, step: str) -> None:
        if (progress, step) != self.reported:
            self.reported = (progress, step)
            self.observer.on_progress(progress, step)

    def _estimate(self, now: float) -> None:
        """Time-based progress, only while the agent itself has been silent about progress."""
        if now - self.last_real_progress < ESTIMATE_AFTER_S:
            return
        estimate = self.parser.estimate(now - self.started)
        if estimate is not None and estimate > self.parser.progress and self.parser.advance(estimate):
            self._report(self.parser.progress, self.parser.step)

    # ---- ending -------------------------------------------------------------------------------
    def _signal(self, sig: signal.Signals) -> bool:
        """Signal the leader (if it has not exited: it may have left its own group) and the group.

        Returns False when the group has no member left. The leader is reaped only once it exited,
        and a pid still used as a group id is never handed to a new process, so the group id
        cannot name anyone else while members remain.

        In a sandbox the leader is bwrap, which forwards nothing and ends the whole sandbox at once
        when signalled: SIGTERM goes to every process inside instead (the agent gets its grace like
        an unconfined one; when it exits, the sandbox's init exits and the kernel ends the rest),
        and SIGKILL to the sandbox's init too.
        """
        if self.sandboxed and not self.exited:
            self.sandbox_init = self.sandbox_init or init_of(self.proc.pid)
            if signal_inside(self.proc.pid, sig) and sig != signal.SIGKILL:
                return True
        if not self.exited:
            with contextlib.suppress(OSError):
                os.kill(self.proc.pid, sig)  # not Popen.send_signal: its poll() would reap the leader
        try:
            os.killpg(self.pgid, sig)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True

    def _wait_exit(self, deadline: float) -> bool:
        """Keep reading output until the leader exits or the deadline passes."""
        while not self.exited:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._pump(min(remaining, KILL_POLL_S))
        return True

    def _group_gone(self) -> bool:
        """True once no process of the group is left (the leader must be reaped to tell)."""
        if self.exited and self.returncode is None:
            self._reap(block=False)
        if self.returncode is None:
            return False
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _end(self, grace_s: float) -> None:
        """SIGTERM the group, wait up to the grace, SIGKILL what is left, then end adopted orphans.

        After a normal exit with nothing left in the group this costs three system calls.
        """
        if grace_s > 0 and not (self.exited and self._group_gone()):
            self._signal(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while self._wait_exit(deadline) and not self._group_gone() and time.monotonic() < deadline:
                orphans.reap_zombies(self.pgid)  # members that obeyed SIGTERM, if adopted by us
                time.sleep(KILL_POLL_S)  # shutdown path only, never the output hot path
        if not (self.exited and self._group_gone()):
            self._signal(signal.SIGKILL)
            deadline = time.monotonic() + KILL_CONFIRM_S  # SIGKILL is asynchronous: confirm
            self._wait_exit(deadline)
            while not self._group_gone() and time.monotonic() < deadline:
                orphans.end_orphans(self.marker, timeout_s=0.0, pgid=self.pgid)  # killed members' zombies may be ours
                time.sleep(KILL_POLL_S)
        orphans.end_orphans(self.marker, timeout_s=KILL_CONFIRM_S, pgid=self.pgid)
        if self.sandbox_init is not None:  # bwrap leaves before its init: not a zombie of ours
            reap_init(*self.sandbox_init, timeout_s=KILL_CONFIRM_S)

    def _drain(self) -> None:
        """Log what the agent printed before it died, waiting briefly for pipes still held open."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while self.open_streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._pump(remaining)

    def _reap(self, *, block: bool) -> int | None:
        """Collect the leader's exit status (as Popen would report it)."""
        try:
            pid, status = os.waitpid(self.proc.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            pid, status = self.proc.pid, 0
        if pid == 0:
            return None
        self.returncode = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.returncode
        self.exited = True
        return self.returncode

    def _close(self) -> None:
        """Release the pipes and the pidfd; reaps the leader if still unreaped."""
        self._close_stdin()
        self.selector.close()
        self.exit_watch.close()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        if self.returncode is None:
            with contextlib.suppress(OSError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self._reap(block=True)
