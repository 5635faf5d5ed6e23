"""Listening sockets, bound before anything starts.

uvicorn binds only after the app's lifespan has started; on a taken port it then runs the lifespan
shutdown, which (with uvloop) could wait forever for a cancelled reader while ignoring SIGINT and
SIGTERM. So `squad serve` binds its socket first and hands it to uvicorn, and `squad up` checks its
API port before it starts Redis, a worker or anything else: a taken port is one line and exit 2.

The socket is bound but not listening: uvicorn calls `listen()` once the app has started. A
restarting API therefore refuses connections until it can serve them. Were it listening from the
start, the kernel would complete every connection made during start-up (which takes seconds on a
loaded machine) and queue it; clients with an open timeout give up and retry, and once up the
server would work through hundreds of abandoned WebSocket handshakes (each with its `since`
backfill) ahead of the live clients and `/health`, which on a loaded machine never caught up.
"""

from __future__ import annotations

import errno
import socket

from squad.core.errors import SquadError


class PortTaken(SquadError):
    """The port is already in use by another process."""


def bind_tcp(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port, not yet listening (SO_REUSEADDR, like uvicorn); PortTaken
    when another socket listens there (Linux refuses that bind even with SO_REUSEADDR)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SquadError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortTaken(f"port {port} on {host} is already in use by another process "
                            "(stop it or choose another port with --port)") from exc
        raise SquadError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.set_inheritable(True)
    return sock


def ensure_port_free(host: str, port: int) -> None:
    """Raise PortTaken now rather than after other services have started."""
    bind_tcp(host, port).close()
