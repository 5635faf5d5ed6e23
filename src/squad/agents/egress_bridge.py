"""Inside a sandbox with `network = "allow"`: `egress_bridge.py SOCKET -- PROGRAM ARGS...`.

Run by bwrap as the sandbox's first command (squad.agents.sandbox), with the standard library only
(`python -I -S`, quick to start). It listens on 127.0.0.1:<free port> of the sandbox's own
network namespace, leaves a detached process forwarding each connection there to SOCKET (the
attempt's egress proxy, squad.agents.egress), sets `HTTP_PROXY`/`HTTPS_PROXY` (and lower case)
to it, and then *becomes* PROGRAM (exec): the agent, hook or verify keeps the bridge's pid, its
signals and its exit code, and never has the forwarder as its child. The forwarder is re-parented
to the sandbox's init and dies with the sandbox (the kernel ends a PID namespace with its init).
"""

from __future__ import annotations

import os
import socket
import sys

TYPE_CHECKING = False  # typing itself costs the command ~15 ms of start-up

if TYPE_CHECKING:  # imported by the forwarder alone: the command starts without waiting for asyncio
    import asyncio

CONNECT_TIMEOUT_S = 10.0
_CHUNK = 65536


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until the end of `reader`, then half-close `writer` (the other direction goes on).
    The egress proxy's tunnels use it too."""
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


async def _serve(listener: socket.socket, path: str) -> None:
    import asyncio

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_unix_connection(path), CONNECT_TIMEOUT_S)
        except (TimeoutError, OSError):
            writer.close()
            return
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()
            writer.close()

    server = await asyncio.start_server(handle, sock=listener)
    async with server:
        await server.serve_forever()


def _forwarder(listener: socket.socket, path: str) -> None:
    """The detached forwarder: no stdio of the agent's (its pipes end when the agent's do)."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    try:
        import asyncio

        asyncio.run(_serve(listener, path))
    finally:
        os._exit(0)


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: egress_bridge.py SOCKET -- PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    path, command = argv[1], argv[3:]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)  # before the agent starts: its first connection waits in the backlog
    port = listener.getsockname()[1]
    child = os.fork()
    if child == 0:  # double fork: the forwarder is nobody's child but init's
        if os.fork() == 0:
            _forwarder(listener, path)
        os._exit(0)
    os.waitpid(child, 0)
    listener.close()  # the forwarder holds it
    proxy = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[name] = proxy
    for name in ("ALL_PROXY", "all_proxy"):
        env.pop(name, None)
    # the sandbox's own loopback stays direct (the proxy, outside, would reach the machine's instead)
    env["NO_PROXY"] = env["no_proxy"] = "localhost,127.0.0.1,::1"
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        print(f"egress bridge: cannot start {command[0]}: {exc.strerror or exc}", file=sys.stderr)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv))
