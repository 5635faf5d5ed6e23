"""The attempt's side of the agents' channel back (`squad mcp`, docs/agents.md).

The process running an attempt (a Celery pool process or the local orchestrator) serves one Unix
socket per attempt, `<folder>/mcp.sock` (0600) in a folder of its own (0700) under the channel
directory, never inside a worktree; the folder's path (`SQUAD_MCP_DIR`) and a random credential
(`SQUAD_MCP_TOKEN`) go into the agent's environment. Each call is checked: the credential, the
channel still open (its attempt not over), the attempt not fenced, and its claim still the card's.
The channel also stops the attempt's clocks while the agent waits for a person (`ask_human`).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
import selectors
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from squad.attempt.subcards import create_subcards
from squad.channel.wire import DIR_ENV, MAX_MESSAGE_BYTES, SOCKET_NAME, TOKEN_ENV, ChannelError, encode, read_line
from squad.core.cards import LIST_ITEM_MAX_CHARS
from squad.core.constants import CANCEL_POLL_S
from squad.core.errors import SquadError
from squad.core.safetext import excerpt
from squad.core.settings import Settings
from squad.core.statuses import Status
from squad.live.events import Event, EventBus, note_event, question_event, status_event
from squad.store import family
from squad.store.card_store import CardStore, Claim

log = structlog.get_logger(__name__)
MAX_CONNECTIONS = 16
NOTE_MAX_CHARS = 16 * 1024
QUESTION_MAX_CHARS = 8 * 1024
STEP_MAX_CHARS = 500
CHOICES_MAX = 50
CLOSE_JOIN_S = 2.0


def channel_root(settings: Settings) -> Path:
    """The folder holding the attempts' socket folders: `channel_dir`, else `squad-<uid>` in the
    runtime (or temporary) directory; made 0700 and refused unless it is ours and not a link."""
    root = settings.channel_dir
    if root is None:
        base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
        root = Path(base) / f"squad-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700, parents=True)
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise SquadError(f"channel folder {root} is not a folder of this user")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(root, 0o700)
    return root


class AttemptChannel:
    """One attempt's socket and its tools. `open()` returns the environment the agent gets."""

    def __init__(self, settings: Settings, store: CardStore, events: EventBus | None, claim: Claim, *,
                 task_id: str, line: Callable[[str, str], None], progress: Callable[[int, str], None],
                 event: Callable[[Event], None], fenced: threading.Event) -> None:
        self.settings, self.store, self.events, self.claim = settings, store, events, claim
        self.card_id = claim.card.card_id
        self.task_id = task_id
        self.line, self.progress, self.event, self.fenced = line, progress, event, fenced
        self.token = secrets.token_urlsafe(32)
        self.folder: Path | None = None
        self.sock: socket.socket | None = None
        self.closed = threading.Event()
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()
        self._paused = 0.0
        self._waits = 0  # asks waiting now
        self._wait_started = 0.0
        self._active_at = 0.0

    # ---- the runner's clocks (agents.runner.PausingObserver) ----------------------------------
    def paused_s(self) -> float:
        with self.lock:
            return self._paused + (time.monotonic() - self._wait_started if self._waits else 0.0)

    def active_at(self) -> float:
        return self._active_at

    def _wait_begins(self) -> None:
        with self.lock:
            if not self._waits:
                self._wait_started = time.monotonic()
            self._waits += 1

    def _wait_ends(self) -> None:
        with self.lock:
            self._waits -= 1
            if not self._waits:
                self._paused += time.monotonic() - self._wait_started
            self._active_at = time.monotonic()

    # ---- the socket -----------------------------------------------------------------------------
    def open(self) -> dict[str, str]:
        """Serve the socket; the variables the agent's environment gets (none if it cannot open)."""
        try:
            self.folder = Path(tempfile.mkdtemp(prefix="a-", dir=channel_root(self.settings)))  # 0700
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            path = self.folder / SOCKET_NAME
            # No umask here: it is the whole process's, and another attempt's thread creating its
            # workdir meanwhile got a 0600 folder its sandbox could not enter. The 0700 folder keeps
            # everyone else from the socket until it is 0600.
            sock.bind(str(path))
            os.chmod(path, 0o600)
            sock.listen(MAX_CONNECTIONS)
            sock.setblocking(False)  # accepted by the process's acceptor thread when ready
        except (OSError, SquadError) as exc:
            self.line("WARNING", f"the agents' channel (squad mcp) is off for this attempt: {exc}")
            self._remove_folder()
            return {}
        self.sock = sock
        _Acceptor.of_this_process().add(sock, self._accepted)
        return {DIR_ENV: str(self.folder), TOKEN_ENV: self.token}

    def close(self) -> None:
        """End the channel: waiting asks give up, the socket and its folder go; the credential is dead."""
        self.closed.set()
        if self.sock is not None:
            _Acceptor.of_this_process().remove(self.sock)  # no connection is handed to us after this
        deadline = time.monotonic() + CLOSE_JOIN_S
        for thread in list(self.threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        self._remove_folder()

    def _remove_folder(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _accepted(self, conn: socket.socket) -> None:
        """A connection to this channel's socket (from the process's acceptor thread): one call,
        served in a thread of its own (an `ask_human` call waits for a person)."""
        if self.closed.is_set():
            conn.close()
            return
        if not self.slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                conn.sendall(encode({"ok": False, "error": "too many calls at once"}))
            conn.close()
            return
        thread = threading.Thread(target=self._serve, args=(conn,), name=f"mcp-call-{self.card_id}", daemon=True)
        with self.lock:
            self.threads = [t for t in self.threads if t.is_alive()]
            self.threads.append(thread)
        thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(30.0)
            try:
                request = json.loads(read_line(conn, MAX_MESSAGE_BYTES))
                reply = {"ok": True, "result": self.handle(request)}
            except ChannelError as exc:
                reply = {"ok": False, "error": str(exc)}
            except SquadError as exc:
                reply = {"ok": False, "error": str(exc)}
            except (ValueError, TypeError) as exc:
                reply = {"ok": False, "error": f"bad request: {exc}"}
            except OSError:
                return
            except Exception as exc:  # never a crash of the attempt's process for an agent's call
                log.exception("channel call failed", card_id=self.card_id)
                reply = {"ok": False, "error": f"internal error: {type(exc).__name__}"}
            with contextlib.suppress(OSError):
                conn.sendall(encode(reply))
        finally:
            conn.close()
            self.slots.release()

    # ---- the calls ------------------------------------------------------------------------------
    def handle(self, request: Any) -> Any:
        """One call: checked, then done; ChannelError with a reason the agent reads."""
        if not isinstance(request, dict):
            raise ChannelError("bad request")
        token = request.get("token")
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self.token.encode()):
            raise ChannelError("refused: not a credential of this attempt")
        self._check_authority()
        self._active_at = time.monotonic()
        tool, args = request.get("tool"), request.get("args") or {}
        if not isinstance(args, dict):
            raise ChannelError("bad request: args must be an object")
        handler = {"report_progress": self._report_progress, "add_note": self._add_note, "get_card": self._get_card,
                   "create_cards": self._create_cards, "ask_human": self._ask_human}.get(str(tool))
        if handler is None:
            raise ChannelError(f"unknown tool {excerpt(str(tool))}")
        return handler(args)

    def _check_authority(self) -> None:
        if self.closed.is_set():
            raise ChannelError("refused: this attempt is over")
        if self.fenced.is_set():
            raise ChannelError("refused: this attempt was fenced (its card was taken over by another attempt)")
        if not self.store.claim_alive(self.card_id, self.claim.token):
            raise ChannelError(f"refused: this attempt no longer holds card {self.card_id} "
                               "(cancelled, finished or taken over)")

    def _report_progress(self, args: dict[str, Any]) -> str:
        percent, step = args.get("percent"), args.get("step")
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise ChannelError("percent must be an integer from 0 to 100")
        if not isinstance(step, str) or len(step) > STEP_MAX_CHARS:
            raise ChannelError(f"step must be text of at most {STEP_MAX_CHARS} characters")
        self.progress(percent, step)
        return "ok"

    def _add_note(self, args: dict[str, Any]) -> str:
        text = args.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > NOTE_MAX_CHARS:
            raise ChannelError(f"text must be non-empty text of at most {NOTE_MAX_CHARS} characters")
        self.line("NOTE", text)
        self.event(note_event(self.card_id, self.task_id, message=text))
        return "ok"

    def _get_card(self, _args: dict[str, Any]) -> dict[str, Any]:
        card = self.store.get_card(self.card_id)
        runs = self.store.list_runs(self.card_id)
        earlier = [r for r in runs if r.id != self.claim.run_id]
        last = earlier[-1] if earlier else None
        deps = self.store.get_cards(card.depends_on)
        latest = self.store.last_run_status(list(deps))
        dependencies = []
        for dep_id in card.depends_on:
            dep = deps.get(dep_id)
            run = latest.get(dep_id)
            dependencies.append({"card_id": dep_id, "status": dep.status.value if dep else None,
                                 "branch": run.branch if run else None,
                                 "landed_commit": getattr(run, "landed_commit", None) if run else None})
        return {
            "card": card.model_dump(mode="json"),
            "attempt": self.claim.attempt,
            "feedback": card.feedback,
            # the run fields of landing (docs/workspaces.md), where this version records them
            "verify_output": getattr(last, "verify_output", None) if last else None,
            "verify_exit": getattr(last, "verify_exit", None) if last else None,
            "previous_error": last.error if last else None,
            "dependencies": dependencies,
            "sub_cards": {cid: status.value for cid, status in family.children(self.store, self.card_id).items()},
        }

    def _create_cards(self, args: dict[str, Any]) -> dict[str, Any]:
        card = self.store.get_card(self.card_id)
        ids = create_subcards(self.settings, self.store, self.events, card, args.get("cards"))
        self.line("INFO", f"created {len(ids)} sub-card(s): {', '.join(ids)}")
        return {"card_ids": ids}

    def _ask_human(self, args: dict[str, Any]) -> str:
        question, choices = args.get("question"), args.get("choices")
        if not isinstance(question, str) or not question.strip() or len(question) > QUESTION_MAX_CHARS:
            raise ChannelError(f"question must be non-empty text of at most {QUESTION_MAX_CHARS} characters")
        if choices is not None and (not isinstance(choices, list) or len(choices) > CHOICES_MAX or not all(
                isinstance(c, str) and 0 < len(c) <= LIST_ITEM_MAX_CHARS for c in choices)):
            raise ChannelError(f"choices must be a list of at most {CHOICES_MAX} texts")
        if "\x00" in question or (choices and any("\x00" in c for c in choices)):
            raise ChannelError("question and choices must not contain NUL characters")
        budget = self.settings.ask_timeout - self.paused_s()
        if budget <= 0:
            return "no answer"
        if not family.ask(self.store, self.card_id, self.claim.token, question, choices):
            raise ChannelError(f"refused: card {self.card_id} is not IN_PROGRESS under this attempt "
                               "(another question waits, or the attempt no longer holds it)")
        self.line("INFO", f"asked a person: {question}")
        self.event(question_event(self.card_id, self.task_id, question=question, choices=choices,
                                  attempt=self.claim.attempt))
        self._status(Status.NEEDS_INPUT)
        self._wait_begins()
        try:
            return self._await_answer(time.monotonic() + budget)
        finally:
            self._wait_ends()

    def _await_answer(self, deadline: float) -> str:
        while True:
            alive, answer = family.take_answer(self.store, self.card_id, self.claim.token)
            if answer is not None:
                self.line("INFO", f"answered: {answer}")
                return answer
            if not alive:
                raise ChannelError("refused: this attempt no longer holds its card (cancelled or taken over)")
            if self.closed.is_set() or time.monotonic() >= deadline:
                if family.stop_asking(self.store, self.card_id, self.claim.token):
                    self.line("INFO", "no answer came in time")
                    self._status(Status.IN_PROGRESS)
                    return "no answer"
                continue  # answered meanwhile: take it
            self.closed.wait(CANCEL_POLL_S)

    def _status(self, status: Status) -> None:
        self.event(status_event(self.card_id, status, self.task_id, attempt=self.claim.attempt))


__all__ = ["AttemptChannel", "channel_root"]


_EPOLL: type = getattr(selectors, "EpollSelector", type(None))


class _Acceptor:
    """The one thread per process that accepts connections on every open channel's socket.

    A thread started and joined per attempt (and one poll of its accept) cost an attempt of a no-op
    agent more than the agent itself (docs/benchmarks.md, "Cheap attempts"); most agents never call.
    Sockets are added and removed under a lock the thread holds only while it hands connections
    over, never while it waits, so `remove` returns at once and no connection reaches a channel
    after it: the socket is unregistered and closed under that lock.
    """

    _instance: _Acceptor | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        self.thread = threading.Thread(target=self._run, name="mcp-accept", daemon=True)
        self.thread.start()

    @classmethod
    def of_this_process(cls) -> _Acceptor:
        with cls._instance_lock:
            if cls._instance is None or cls._instance.pid != os.getpid():  # (a forked child starts its own)
                cls._instance = cls()
            return cls._instance

    def add(self, sock: socket.socket, handler: Callable[[socket.socket], None]) -> None:
        with self.lock:
            self.selector.register(sock, selectors.EVENT_READ, handler)
        self._wake()

    def remove(self, sock: socket.socket) -> None:
        with self.lock:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(sock)
            with contextlib.suppress(OSError):
                sock.close()
        self._wake()

    def _wake(self) -> None:
        """Have the thread wait again on the changed set. An epoll wait already covers a socket
        added or removed meanwhile (the kernel's set is shared): no wake, no thread hand-off."""
        if not isinstance(self.selector, _EPOLL):
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self.wake_w, b"x")

    def _run(self) -> None:
        while True:
            try:
                self._once()
            except Exception:  # never the acceptor's end: every later channel would go unanswered
                log.exception("channel acceptor: unexpected error")
                time.sleep(CANCEL_POLL_S)

    def _once(self) -> None:
        ready = self.selector.select()
        with self.lock:
            for key, _mask in ready:
                if key.data is None:  # the wake pipe: the set of sockets changed
                    with contextlib.suppress(BlockingIOError, OSError):
                        os.read(self.wake_r, 4096)
                    continue
                if self.selector.get_map().get(key.fd) is not key:  # removed meanwhile
                    continue
                try:
                    conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                except OSError:  # nothing waiting any more (the caller gave up), or closed
                    continue
                conn.setblocking(True)
                try:
                    key.data(conn)
                except Exception:  # a handler's bug: the connection goes, the acceptor stays
                    log.exception("channel connection not handled")
                    conn.close()
