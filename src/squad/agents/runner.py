"""Spawn one agent and supervise it: stream its lines, apply the limits, end its whole process tree.

Whatever the agent does wrong (crash, hang, flood, giant lines, orphaned grandchildren that ignore
SIGTERM) becomes an `AgentResult`; only caller bugs propagate, and even then the group is ended first.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import psutil

from squad.agents.progress import ProgressParser, Usage
from squad.config import AgentConfig
from squad.constants import CANCEL_POLL_S, KILL_GRACE_S, MAX_LINE_BYTES

__all__ = ["AgentResult", "Limits", "RunObserver", "build_command", "expand_argv", "run_agent"]

PLACEHOLDERS = ("card_id", "agent", "prompt_file", "workdir", "attempt", "session_id")
ESTIMATE_AFTER_S = 5.0  # no real progress for this long: the time-based estimate may take over
ESTIMATE_EVERY_S = 1.0
DESCENDANT_SCAN_S = 1.0  # how often the agent's process tree is recorded while it runs
READ_CHUNK_BYTES = 64 * 1024
READER_POLL_S = 0.5  # how soon a reader notices it must stop while a pipe is still held open
DRAIN_TIMEOUT_S = 2.0  # after the agent is gone, how long to wait for the rest of its output
THREAD_JOIN_S = 2.0
QUEUE_MAX_ITEMS = 64  # back-pressure: batches of one read chunk each, so a few MB in flight at most
KILL_POLL_S = 0.05
KILL_CONFIRM_S = 2.0

_PR_SET_PDEATHSIG = 1
_PLACEHOLDER_RE = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded before fork: the child only makes the call


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


@dataclass
class AgentResult:
    """How an attempt's agent ended; `error` is None only when it succeeded."""

    outcome: str  # succeeded | failed | soft_timeout | timeout | stalled | cancelled | spawn_failed
    exit_code: int | None
    error: str | None
    usage: Usage
    duration_s: float
    pid: int | None


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
) -> tuple[list[str], bytes | None]:
    """The argv and stdin bytes of one attempt.

    The prompt file is written in every mode so `{prompt_file}` always points at the prompt; resume
    items are added only when a previous attempt left a session id and the agent can resume.
    """
    prompt_file.parent.mkdir(parents=True, exist_ok=True)
    prompt_file.write_text(prompt, encoding="utf-8")
    values = {
        "card_id": card_id,
        "agent": agent_name,
        "prompt_file": str(prompt_file),
        "workdir": str(workdir),
        "attempt": str(attempt),
    }
    argv = expand_argv(agent.command, values)
    if resume_session_id and agent.resume:
        argv += expand_argv(agent.resume, {**values, "session_id": resume_session_id})
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
) -> AgentResult:
    """Run one agent to its end and report how it ended.

    Spawned from the calling thread on purpose: the parent-death signal fires when the spawning
    *thread* ends, so the agent lives exactly as long as this call (or dies with the worker).
    """
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            shell=False,
            start_new_session=True,
            cwd=cwd,
            env={**os.environ, **env},
            stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent(os.getpid()),
        )
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return AgentResult(
            outcome="spawn_failed",
            exit_code=None,
            error=f"cannot start agent: {_describe(exc)}",
            usage=parser.usage,
            duration_s=time.monotonic() - started,
            pid=None,
        )
    return _AgentWatch(proc, stdin_data, parser, limits, observer, started).run()


# ---- spawning helpers ---------------------------------------------------------------------------
def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGKILL the child when the spawning thread dies."""
    prctl = getattr(_LIBC, "prctl", None)
    if prctl is None:  # not Linux: no parent-death signal available
        return None
    sigkill = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os.kill(os.getpid(), sigkill)

    return preexec


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def _pipe_holders(inodes: set[int]) -> list[psutil.Process]:
    """Other processes holding one of the agent's pipes: its tree, even members that left the group.

    Pipes are close-on-exec and Popen closes other fds, so only the agent and its descendants
    can hold them.
    """
    me, holders = os.getpid(), []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                target = os.readlink(fd.path)
                if target.startswith("pipe:[") and int(target[6:-1]) in inodes:
                    holders.append(psutil.Process(int(entry.name)))
                    break
        except (OSError, ValueError, psutil.Error):
            continue
    return holders


def _seconds(value: float) -> str:
    """1700.0 -> "1700", 2.5 -> "2.5": how limits read in error texts."""
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}".rstrip("0")


def _alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (a zombie is dead; an init that never reaps keeps it listed)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# ---- reading output -----------------------------------------------------------------------------
@dataclass
class _Channel:
    """One queue for both streams and the exit, so the supervisor blocks on a single `get`.

    Items are (kind, stream, lines) with kind "lines", "eof" or "exit"; a line is (bytes, dropped).
    Lines travel in batches of one read: one queue round trip per chunk, not per line.
    """

    items: queue.Queue[tuple[str, str, list[tuple[bytes, int]]]] = field(
        default_factory=lambda: queue.Queue(maxsize=QUEUE_MAX_ITEMS)
    )
    stopping: threading.Event = field(default_factory=threading.Event)
    exited: threading.Event = field(default_factory=threading.Event)
    last_activity: float = field(default_factory=time.monotonic)

    def put(self, kind: str, stream: str = "", lines: list[tuple[bytes, int]] | None = None) -> None:
        """Blocks while the queue is full, but gives up once the supervisor stops listening."""
        while True:
            try:
                self.items.put((kind, stream, lines or []), timeout=READER_POLL_S)
                return
            except queue.Full:
                if self.stopping.is_set():
                    return


def _read_lines(fd: int, stream: str, channel: _Channel) -> None:
    """Split a pipe into lines without ever holding more than MAX_LINE_BYTES of one line.

    A longer line keeps its head and the count of bytes thrown away up to its newline.
    """
    line = bytearray()
    head: bytes | None = None
    dropped = 0
    try:
        while not channel.stopping.is_set():
            ready, _, _ = select.select([fd], [], [], READER_POLL_S)
            if not ready:
                continue
            chunk = os.read(fd, READ_CHUNK_BYTES)
            if not chunk:
                break
            channel.last_activity = time.monotonic()
            batch: list[tuple[bytes, int]] = []
            start = 0
            while start <= len(chunk):
                newline = chunk.find(b"\n", start)
                end = newline if newline >= 0 else len(chunk)
                if head is not None:
                    dropped += end - start
                else:
                    line += chunk[start:end]
                    if len(line) > MAX_LINE_BYTES:
                        head, dropped = bytes(line[:MAX_LINE_BYTES]), len(line) - MAX_LINE_BYTES
                        line = bytearray()
                if newline < 0:
                    break
                batch.append((head if head is not None else bytes(line), dropped))
                line, head, dropped = bytearray(), None, 0
                start = newline + 1
            if batch:
                channel.put("lines", stream, batch)
        if head is not None or line:
            channel.put("lines", stream, [(head if head is not None else bytes(line), dropped)])
    except OSError:
        pass
    finally:
        channel.put("eof", stream)


def _write_stdin(pipe: IO[bytes], data: bytes) -> None:
    """Feed the prompt then close stdin; an agent that stops reading is not an error."""
    try:
        pipe.write(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            pipe.close()


def _wait_exit(pid: int, channel: _Channel) -> None:
    """Report the agent's exit without reaping it: its pid (= group id) stays reserved until we kill the group."""
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        pass
    channel.exited.set()
    channel.put("exit")


# ---- supervision --------------------------------------------------------------------------------
class _AgentWatch:
    """The state of one running agent; every method runs on the calling thread except the helpers."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        stdin_data: bytes | None,
        parser: ProgressParser,
        limits: Limits,
        observer: RunObserver,
        started: float,
    ) -> None:
        self.proc = proc
        self.pgid = proc.pid  # start_new_session: the agent leads its own group
        self.parser = parser
        self.limits = limits
        self.observer = observer
        self.started = started
        self.channel = _Channel()
        self.tracked: dict[int, psutil.Process] = {}
        self.open_streams = {"stdout", "stderr"}
        self.pipe_inodes = {os.fstat(p.fileno()).st_ino for p in (proc.stdin, proc.stdout, proc.stderr) if p}
        self.reported = (parser.progress, parser.step)
        self.last_real_progress = started
        self.stdin_data = stdin_data
        self.threads: list[threading.Thread] = []

    def _start_threads(self) -> None:
        """A stdin writer, one reader per stream and an exit waiter: the calling thread only consumes."""
        proc = self.proc
        if self.stdin_data is not None and proc.stdin is not None:
            self._start(_write_stdin, proc.stdin, self.stdin_data, name="stdin")
        assert proc.stdout is not None and proc.stderr is not None  # both are PIPE
        self._start(_read_lines, proc.stdout.fileno(), "stdout", self.channel, name="stdout")
        self._start(_read_lines, proc.stderr.fileno(), "stderr", self.channel, name="stderr")
        self._start(_wait_exit, proc.pid, self.channel, name="wait")

    def _start(self, target: Callable[..., None], *args: object, name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=f"agent-{self.proc.pid}-{name}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def run(self) -> AgentResult:
        """Supervise to the end; whatever happens, the agent's processes are gone on return."""
        ended = False
        try:
            self._start_threads()
            outcome, error = self._supervise()
            if outcome == "timeout":
                self._end_group(grace_s=0.0)
            elif outcome is not None:
                remaining = self.started + self.limits.time_limit_s - time.monotonic()
                self._end_group(grace_s=max(0.0, min(self.limits.kill_grace_s, remaining)))
            else:
                self._end_group(grace_s=self.limits.kill_grace_s, only_leftovers=True)
            ended = True
            self._drain()
            exit_code = self._reap()
            if outcome is None:
                error = self.parser.verdict(exit_code)
                outcome = "succeeded" if error is None else "failed"
            return AgentResult(
                outcome=outcome,
                exit_code=exit_code,
                error=error,
                usage=self.parser.usage,
                duration_s=time.monotonic() - self.started,
                pid=self.proc.pid,
            )
        finally:
            if not ended:  # a caller bug or an exception raised into us (e.g. a Celery soft limit)
                self._end_group(grace_s=self.limits.kill_grace_s)
            self._close()

    def _supervise(self) -> tuple[str | None, str | None]:
        """Consume output until the agent exits (None, None) or a limit ends it (outcome, error)."""
        limits = self.limits
        soft_at = self.started + limits.soft_time_limit_s
        hard_at = self.started + limits.time_limit_s
        next_poll = self.started
        next_scan = self.started + min(DESCENDANT_SCAN_S, 0.2)
        next_estimate = self.started + ESTIMATE_AFTER_S
        while True:
            now = time.monotonic()
            if now >= hard_at:
                return "timeout", f"time limit exceeded ({_seconds(limits.time_limit_s)}s)"
            if now >= soft_at:
                return "soft_timeout", f"soft time limit exceeded ({_seconds(limits.soft_time_limit_s)}s)"
            stall_at = self.channel.last_activity + limits.stall_timeout_s
            if limits.stall_timeout_s > 0 and now >= stall_at:
                return "stalled", "stalled"
            if now >= next_poll:
                next_poll = now + CANCEL_POLL_S
                reason = self.observer.stop_reason()
                if reason is not None:
                    return "cancelled", reason
            if now >= next_scan:
                next_scan = now + DESCENDANT_SCAN_S
                self._track_descendants()
            if now >= next_estimate:
                next_estimate = now + ESTIMATE_EVERY_S
                self._estimate(now)
            wake = min(hard_at, soft_at, next_poll, next_scan, next_estimate)
            if limits.stall_timeout_s > 0:
                wake = min(wake, stall_at)
            try:
                kind, stream, lines = self.channel.items.get(timeout=max(0.001, wake - now))
            except queue.Empty:
                continue
            if kind == "exit":
                return None, None
            self._handle(kind, stream, lines)

    def _handle(self, kind: str, stream: str, lines: list[tuple[bytes, int]]) -> None:
        if kind == "eof":
            self.open_streams.discard(stream)
            return
        level = "INFO" if stream == "stdout" else "ERROR"
        feed, on_line = self.parser.feed, self.observer.on_line
        for data, dropped in lines:
            text = data.decode("utf-8", errors="replace")
            if text.endswith("\r"):
                text = text[:-1]
            if dropped:
                text += f" …[truncated {dropped} bytes]"
            result = feed(text, stream)
            on_line(level, result.message)
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
    def _track_descendants(self) -> None:
        """Remember the agent's tree while it runs: a grandchild that leaves the group is still ours."""
        if self.channel.exited.is_set():
            return
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return
        for child in children:
            self.tracked.setdefault(child.pid, child)

    def _survivors(self) -> list[psutil.Process]:
        """Everything left of the agent except its leader: descendants, group members, pipe holders."""
        self._track_descendants()
        if self.open_streams:
            for holder in _pipe_holders(self.pipe_inodes):
                self.tracked.setdefault(holder.pid, holder)
        for proc in psutil.process_iter():
            if proc.pid == self.proc.pid or proc.pid in self.tracked:
                continue
            with contextlib.suppress(OSError):
                if os.getpgid(proc.pid) == self.pgid:
                    self.tracked[proc.pid] = proc
        return [p for p in self.tracked.values() if p.pid != self.proc.pid and _alive(p)]

    def _signal(self, sig: signal.Signals, procs: list[psutil.Process]) -> None:
        if not self.channel.exited.is_set():  # the leader may have left its own group
            with contextlib.suppress(OSError):
                os.kill(self.proc.pid, sig)  # not Popen.send_signal: its poll() would reap the leader
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)

    def _end_group(self, grace_s: float, only_leftovers: bool = False) -> None:
        """SIGTERM the group and every tracked descendant, wait up to the grace, then SIGKILL.

        The leader is not reaped yet, so its pid cannot have been reused as a group id.
        """
        survivors = self._survivors()
        leader_done = self.channel.exited.is_set()
        if only_leftovers and leader_done and not survivors:
            return
        if grace_s > 0:
            self._signal(signal.SIGTERM, survivors)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline:
                if self.channel.exited.is_set() and not any(_alive(p) for p in survivors):
                    break
                time.sleep(KILL_POLL_S)  # shutdown path only, never the output hot path
        survivors = self._survivors()
        self._signal(signal.SIGKILL, survivors)
        deadline = time.monotonic() + KILL_CONFIRM_S  # SIGKILL is asynchronous: return once they are gone
        while any(_alive(p) for p in survivors) and time.monotonic() < deadline:
            time.sleep(KILL_POLL_S)

    def _drain(self) -> None:
        """Log what the agent printed before it died, waiting briefly for pipes still held open."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while self.open_streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                kind, stream, lines = self.channel.items.get(timeout=remaining)
            except queue.Empty:
                break
            if kind != "exit":
                self._handle(kind, stream, lines)

    def _reap(self) -> int:
        try:
            return self.proc.wait(timeout=THREAD_JOIN_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def _close(self) -> None:
        """Stop the helper threads and release the pipes; also reaps the agent if still unreaped."""
        self.channel.stopping.set()
        for thread in self.threads:
            thread.join(timeout=THREAD_JOIN_S)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        if self.proc.returncode is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=THREAD_JOIN_S)
