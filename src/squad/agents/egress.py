"""The egress proxy of one attempt with `network = "allow"` (docs/security.md).

The sandbox has no network of its own (`--unshare-net`). Its only way out is this HTTP proxy,
which the worker runs per attempt on a Unix socket in a private folder bound into the sandbox;
inside, `squad.agents.egress_bridge` listens on the sandbox's own loopback and hands each
connection to the socket, and the agent gets `HTTP(S)_PROXY` pointing at it.

The proxy speaks HTTP/1.1 (parsed by h11): `CONNECT host:port` opens a tunnel (https and any
other TCP protocol), an absolute-form request (`GET http://host/path`) is forwarded (plain http,
one request per connection). The target, as the agent named it, must match `allow_hosts`
(squad.core.hostpatterns); anything else gets 403 and a line on the card's log. The proxy
resolves and connects from the worker's side: it sees host names and ports, never what goes
through a tunnel. Every wait is bounded: the request head (`HEAD_TIMEOUT_S`), resolving and
connecting (`CONNECT_TIMEOUT_S`), and the whole proxy ends with the attempt (`close`).

Its folder is named after the process that runs it (`squad-egress-<pid>-…`), which holds a lock
on it (`flock`) while it serves. A process killed meanwhile (SIGKILL, a crash) cannot remove it:
`remove_leftovers`, called where agents start being run (a worker's pool process, the local
orchestrator), removes the folders whose owner is gone and whose lock nobody holds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import os
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

import h11
import structlog

from squad.agents.egress_bridge import pipe
from squad.core.hostpatterns import HostPattern, allowed, parse_authority

__all__ = ["FOLDER_PREFIX", "SOCKET_NAME", "EgressProxy", "remove_leftovers"]

log = structlog.get_logger(__name__)

#: The proxy's socket, in its private folder (bound into the sandbox at the same path)
SOCKET_NAME = "proxy.sock"
#: The proxy's folder in the temporary directory: this prefix, the owner's pid, `-`, random letters
FOLDER_PREFIX = "squad-egress-"
_FOLDER_NAME = re.compile(re.escape(FOLDER_PREFIX) + r"(\d+)-\w+")
HEAD_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 5.0
#: connections one attempt may hold open at once (more get 503)
MAX_CONNECTIONS = 128
#: refusals logged one by one on the card; more are counted in the closing summary
REFUSALS_SHOWN = 20
_CHUNK = 65536
_HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization", b"proxy-authenticate",
               b"te", b"trailer", b"upgrade", b"host"}


class _Refused(Exception):
    """A request the proxy answers with an error status and a reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class EgressProxy:
    """One attempt's HTTP proxy on a Unix socket: `start()`, then `close()` when the attempt ends.

    `log_line(level, message)` puts a line on the card's log (refusals, the closing summary); it is
    called from the proxy's own thread.
    """

    def __init__(self, patterns: list[HostPattern], log_line: Callable[[str, str], None] | None = None) -> None:
        self.patterns = patterns
        self.log_line = log_line
        self.folder: Path | None = None
        self._folder_lock: int | None = None  # held while serving: the folder's owner is alive
        self.allowed_count = 0
        self.refused_count = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = asyncio.Event()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def socket_path(self) -> Path:
        assert self.folder is not None, "start() first"
        return self.folder / SOCKET_NAME

    def start(self) -> Path:
        """Listen on a socket in a new private folder (returned; bind it into the sandbox) and serve."""
        self.folder = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-"))  # 0700, ours alone
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._folder_lock = _lock(self.folder)
            listener.bind(str(self.socket_path))
            listener.listen(MAX_CONNECTIONS)
        except OSError:
            listener.close()
            self._remove_folder()
            raise
        # listening before the sandbox starts: its first connection queues, no readiness wait
        self._loop = asyncio.new_event_loop()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="squad-egress-dns")
        self._loop.set_default_executor(self._executor)
        self._thread = threading.Thread(target=self._serve, args=(listener,), name="squad-egress", daemon=True)
        self._thread.start()
        return self.folder

    def close(self) -> None:
        """Stop serving, end every open connection, remove the socket's folder, log a summary."""
        if self._loop is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):  # the loop ended already
                self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(CLOSE_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning("egress proxy did not stop in time", folder=str(self.folder))
            self._thread = None
        if self._executor is not None:  # a look-up stuck in the resolver ends with its own timeout
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._remove_folder()
        hidden = self.refused_count - REFUSALS_SHOWN
        if self.allowed_count or self.refused_count:
            self._line("INFO", f"sandbox: egress proxy: {self.allowed_count} connection(s) allowed, "
                               f"{self.refused_count} refused" + (f" ({hidden} not shown)" if hidden > 0 else ""))

    def _remove_folder(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        if self._folder_lock is not None:
            os.close(self._folder_lock)
            self._folder_lock = None

    # ---- the proxy's thread -----------------------------------------------------------------
    def _serve(self, listener: socket.socket) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main(listener))
        except Exception:  # the attempt goes on; its agent just loses the network
            log.exception("egress proxy failed")
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            listener.close()

    async def _main(self, listener: socket.socket) -> None:
        server = await asyncio.start_unix_server(self._handle, sock=listener)
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=CLOSE_TIMEOUT_S)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if len(self._tasks) > MAX_CONNECTIONS:  # closed at once (the agent's client sees a reset)
                self.refused_count += 1
                return
            await self._proxy(reader, writer)
        except (OSError, TimeoutError, h11.ProtocolError):
            pass
        except ExceptionGroup as group:  # from a TaskGroup: the same kinds, else a bug to see
            if not all(isinstance(exc, (OSError, TimeoutError, h11.ProtocolError)) for exc in group.exceptions):
                raise
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT_S)

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            request = await asyncio.wait_for(_next(conn, reader), HEAD_TIMEOUT_S)
        except TimeoutError:
            return
        except h11.RemoteProtocolError as exc:
            await self._answer(writer, conn, 400, f"bad request: {exc}")
            return
        if not isinstance(request, h11.Request):
            return
        try:
            host, port, origin_target = _target(request)
        except _Refused as exc:
            await self._answer(writer, conn, exc.status, exc.reason)
            return
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if not allowed(self.patterns, host, port):
            self.refused_count += 1
            if self.refused_count <= REFUSALS_SHOWN:
                self._line("WARNING", f"sandbox: refused connection to {shown} (not in allow_hosts)")
            await self._answer(writer, conn, 403, f"{shown} is not in the sandbox's allow_hosts")
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            await self._answer(writer, conn, 502, f"cannot connect to {shown}: {exc or type(exc).__name__}")
            return
        self.allowed_count += 1
        try:
            if origin_target is None:  # CONNECT: a tunnel
                while (event := conn.next_event()) is not h11.PAUSED:  # its end of message, then the switch
                    if event is h11.NEED_DATA:
                        await asyncio.wait_for(_feed(conn, reader), HEAD_TIMEOUT_S)
                writer.write(conn.send(h11.Response(status_code=200, reason=b"Connection established", headers=[])))
                early, _closed = conn.trailing_data
                if early:
                    up_writer.write(early)
                await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
            else:  # plain http: this request on, the response back as it comes (a 100 Continue too), then the end
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._forward(conn, reader, request, host, port, origin_target, up_writer))
                    group.create_task(pipe(up_reader, writer))
        finally:
            up_writer.close()

    async def _forward(self, conn: h11.Connection, reader: asyncio.StreamReader, request: h11.Request, host: str,
                       port: int, target: bytes, upstream: asyncio.StreamWriter) -> None:
        """Send `request` (origin-form, `Connection: close`, the proxy's headers dropped) and its body."""
        authority = f"[{host}]" if ":" in host else host
        if port != 80:
            authority += f":{port}"
        headers = [(b"host", authority.encode("ascii"))]  # the target's, whatever Host the agent sent
        headers += [(name, value) for name, value in request.headers if name.lower() not in _HOP_BY_HOP]
        headers.append((b"connection", b"close"))
        client = h11.Connection(h11.CLIENT)
        upstream.write(client.send(h11.Request(method=request.method, target=target, headers=headers)))
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                await asyncio.wait_for(_feed(conn, reader), HEAD_TIMEOUT_S)
                continue
            if isinstance(event, h11.Data):
                upstream.write(client.send(event))
                await upstream.drain()
            elif isinstance(event, h11.EndOfMessage):
                upstream.write(client.send(h11.EndOfMessage()))
                await upstream.drain()
                return
            else:
                return

    async def _answer(self, writer: asyncio.StreamWriter, conn: h11.Connection, status: int, reason: str) -> None:
        body = (reason + "\n").encode()
        with contextlib.suppress(h11.LocalProtocolError):
            writer.write(conn.send(h11.Response(status_code=status, reason=HTTPStatus(status).phrase.encode(), headers=[
                (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                (b"connection", b"close")])))
            writer.write(conn.send(h11.Data(data=body)))
            writer.write(conn.send(h11.EndOfMessage()))
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.drain(), CLOSE_TIMEOUT_S)

    def _line(self, level: str, message: str) -> None:
        """A line on the card's log (the process's own log without one)."""
        if self.log_line is None:
            log.info("egress", line_level=level, message=message)
            return
        try:
            self.log_line(level, message)
        except Exception:  # a log sink failing must not end the proxy
            log.exception("egress proxy could not log", message=message)


def remove_leftovers(folder: Path | None = None) -> list[Path]:
    """Remove the proxy folders (in `folder`, default the temporary directory) that a process killed
    while serving left behind; returns them. A folder is left alone unless it is this user's, its
    owner (the pid in its name) is gone or a zombie, and no process holds its lock (a live owner in
    another PID namespace sharing the folder still does)."""
    top = Path(folder or tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = [entry for entry in os.scandir(top) if entry.name.startswith(FOLDER_PREFIX)]
    except OSError:
        return removed
    for entry in entries:
        match = _FOLDER_NAME.fullmatch(entry.name)
        try:
            if (match is None or not entry.is_dir(follow_symlinks=False)
                    or entry.stat(follow_symlinks=False).st_uid != os.geteuid() or _running(int(match[1]))):
                continue
            fd = _lock(Path(entry.path))
        except OSError:  # gone meanwhile, or locked: its owner serves
            continue
        try:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
        finally:
            os.close(fd)
    if removed:
        log.info("removed egress proxy folders left by dead processes", folders=[str(p) for p in removed])
    return removed


def _lock(folder: Path) -> int:
    """An open descriptor of `folder` holding its exclusive lock; OSError when another holds it."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def _running(pid: int) -> bool:
    """Whether `pid` names a process that is not a zombie (this one included)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # unreadable: someone's, leave its folder alone
    return stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X")


def _target(request: h11.Request) -> tuple[str, int, bytes | None]:
    """(host, port, origin-form target or None for CONNECT) of a proxy request, or _Refused."""
    try:
        target = request.target.decode("ascii")
    except UnicodeDecodeError:
        raise _Refused(400, "the request target is not ASCII") from None
    if request.method == b"CONNECT":
        try:
            host, port = parse_authority(target)
        except ValueError as exc:
            raise _Refused(400, f"CONNECT needs host:port: {exc}") from None
        if port is None:
            raise _Refused(400, "CONNECT needs host:port")
        return host, port, None
    parts = urlsplit(target)
    if parts.scheme.lower() != "http" or not parts.netloc:
        raise _Refused(400, "this proxy takes CONNECT host:port, or http://host/path requests")
    if "@" in parts.netloc:
        raise _Refused(400, "no user information in the target")
    try:
        host, port = parse_authority(parts.netloc)
    except ValueError as exc:
        raise _Refused(400, f"bad target host: {exc}") from None
    origin = parts.path or "/"
    if parts.query:
        origin += "?" + parts.query
    return host, port or 80, origin.encode("ascii")


async def _feed(conn: h11.Connection, reader: asyncio.StreamReader) -> None:
    data = await reader.read(_CHUNK)
    conn.receive_data(data)  # b"" is the end of the stream


async def _next(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Event | type[h11.PAUSED]:
    """The next event of the request, reading as needed (the caller bounds the wait)."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event  # type: ignore[return-value]
        await _feed(conn, reader)
