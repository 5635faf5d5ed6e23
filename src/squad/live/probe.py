"""A one-connection Redis probe for `squad status`, without redis-py.

Importing redis-py costs a short command ~0.1 s (its package imports its asyncio and cluster
clients and OpenTelemetry's metrics API), more than the rest of `squad status` on a local store. The
probe asks a handful of read commands (and removes expired orchestrator ids) over one blocking
socket; hiredis — the RESP library redis-py itself parses with, a dependency of squad — packs
the commands and parses the replies, so no protocol code lives here. It understands the URLs
squad's own settings produce (`redis://[user:password@]host[:port][/db]`, `unix://[...]/path`, with
an optional `?db=`); anything else (TLS, client options in the query) is `None` from `QuickRedis.open`,
and the caller uses the full client (`squad.live.connections`).
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from squad.core.constants import REDIS_CONNECT_TIMEOUT_S, REDIS_SOCKET_TIMEOUT_S

__all__ = ["ProbeError", "QuickRedis"]


class ProbeError(Exception):
    """The Redis did not answer as a Redis (refused, timed out, closed, or an error reply)."""


def connect_tcp(host: str, port: int, timeout_s: float) -> socket.socket:
    """`socket.create_connection` to `host:port`, an ASCII host name passed as bytes: given text, the
    resolver encodes it with the `idna` codec, whose import (with `stringprep` and `unicodedata`)
    costs more than the connection (docs/benchmarks.md "`squad status` from what it knows")."""
    return socket.create_connection((host.encode("ascii") if host.isascii() else host, port),  # type: ignore[arg-type]
                                    timeout=timeout_s)


class QuickRedis:
    """One socket to one Redis: pipelined commands, every call bounded by a socket timeout. Replies are
    decoded to text, as squad's clients decode them (`decode_responses=True`)."""

    def __init__(self, sock: socket.socket) -> None:
        import hiredis

        self._sock = sock
        self._hiredis = hiredis
        self._reader = hiredis.Reader(encoding="utf-8", errors="replace")

    @classmethod
    def open(cls, url: str, connect_timeout_s: float = REDIS_CONNECT_TIMEOUT_S,
             socket_timeout_s: float = REDIS_SOCKET_TIMEOUT_S) -> QuickRedis | None:
        """A connected probe (authenticated, its db selected); None when the URL asks for more than
        the probe does; ProbeError when the Redis refuses, does not answer or refuses the login.
        The timeouts are squad's clients' own (`squad.live.connections`)."""
        target = _target(url)
        if target is None:
            return None
        address, username, password, db = target
        try:
            if isinstance(address, str):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(connect_timeout_s)
                sock.connect(address)
            else:
                sock = connect_tcp(*address, timeout_s=connect_timeout_s)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(socket_timeout_s)
        except OSError as exc:
            raise ProbeError(f"cannot connect: {exc}") from exc
        probe = cls(sock)
        setup: list[tuple[str, ...]] = []
        if password is not None:
            setup.append(("AUTH", username, password) if username else ("AUTH", password))
        if db:
            setup.append(("SELECT", str(db)))
        try:
            for reply in probe.execute(*setup) if setup else []:
                if isinstance(reply, Exception):
                    raise ProbeError(str(reply))
        except ProbeError:
            probe.close()
            raise
        return probe

    def execute(self, *commands: tuple[str, ...]) -> list[Any]:
        """Send `commands` in one write and read their replies, in order; an error reply comes back
        as an exception object in its place (raised by the callers that need it)."""
        try:
            # (hiredis' stubs type the argument as a 1-tuple)
            self._sock.sendall(b"".join(self._hiredis.pack_command(command)  # type: ignore[arg-type]
                                        for command in commands))
            replies: list[Any] = []
            while len(replies) < len(commands):
                reply = self._reader.gets()
                if reply is False:
                    data = self._sock.recv(65536)
                    if not data:
                        raise ProbeError("connection closed by Redis")
                    self._reader.feed(data)
                    continue
                replies.append(reply)
            return replies
        except (OSError, self._hiredis.ProtocolError) as exc:
            raise ProbeError(str(exc) or type(exc).__name__) from exc

    def call(self, *command: str) -> Any:
        """One command's reply (ProbeError for an error reply)."""
        reply = self.execute(command)[0]
        if isinstance(reply, Exception):
            raise ProbeError(str(reply))
        return reply

    # what `squad.live.presence.live_orchestrators` asks of a client
    def smembers(self, key: str) -> set[str]:
        return set(self.call("SMEMBERS", key))

    def mget(self, keys: list[str]) -> list[str | None]:
        return list(self.call("MGET", *keys))

    def srem(self, key: str, *members: str) -> int:
        return int(self.call("SREM", key, *members))

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass


def _target(url: str) -> tuple[tuple[str, int] | str, str | None, str | None, int] | None:
    """(address, username, password, db) of a plain Redis URL; None for anything else."""
    try:
        parts = urlsplit(url)
        query = parse_qs(parts.query, keep_blank_values=True)
        if set(query) - {"db"} or parts.fragment:
            return None
        db_text = query["db"][0] if "db" in query else ""
        if parts.scheme == "redis":
            if not parts.hostname:
                return None
            address: tuple[str, int] | str = (parts.hostname, parts.port or 6379)
            db_text = db_text or parts.path.strip("/")
        elif parts.scheme == "unix":
            if not parts.path:
                return None
            address = unquote(parts.path)
        else:  # rediss (TLS) and anything else: the full client
            return None
        db = int(db_text) if db_text else 0
    except ValueError:  # a port or db that is not a number
        return None
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if username and password is None:  # a user without a password: left to the full client
        return None
    return address, username, password, db
