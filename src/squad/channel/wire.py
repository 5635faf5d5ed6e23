"""The wire between `squad mcp` and the attempt that started its agent (docs/agents.md).

The process running an attempt serves a Unix socket, `<SQUAD_MCP_DIR>/mcp.sock` (0600, in a 0700
folder of its own outside every worktree); `squad mcp` sends each tool call there as one line of
JSON, `{"token", "tool", "args"}`, and reads one line back, `{"ok": true, "result"}` or `{"ok":
false, "error"}`. One call per connection: `ask_human` keeps its connection open until a person
answers. The token is the attempt's credential: useless once its attempt ended.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

#: The folder of an attempt's socket (one variable: a sandbox bind-mounts this folder) and its credential.
DIR_ENV = "SQUAD_MCP_DIR"
TOKEN_ENV = "SQUAD_MCP_TOKEN"
SOCKET_NAME = "mcp.sock"
#: One request or answer at most (100 sub-cards with long descriptions fit).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
CONNECT_TIMEOUT_S = 10.0
#: Tool names, a contract with the agents (docs/agents.md).
TOOLS = ("report_progress", "add_note", "get_card", "create_cards", "ask_human")


class ChannelError(Exception):
    """A tool call refused or failed: its text is what the agent reads."""


def encode(message: dict[str, Any]) -> bytes:
    """One message as a line."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def read_line(sock: socket.socket, limit: int = MAX_MESSAGE_BYTES) -> bytes:
    """Bytes up to the first newline (without it); ChannelError past `limit` or on a closed peer."""
    data = bytearray()
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            if data:
                break
            raise ChannelError("the attempt closed the channel")
        newline = chunk.find(b"\n")
        if newline >= 0:
            data += chunk[:newline]
            break
        data += chunk
        if len(data) > limit:
            raise ChannelError(f"message over {limit} bytes")
    if len(data) > limit:
        raise ChannelError(f"message over {limit} bytes")
    return bytes(data)


def call(folder: Path, token: str, tool: str, args: dict[str, Any], *, timeout_s: float | None = None) -> Any:
    """Send one tool call to the attempt and return its result; ChannelError with the reason otherwise."""
    path = folder / SOCKET_NAME
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT_S)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise ChannelError("this attempt is over: its channel is closed") from None
        except OSError as exc:
            raise ChannelError(f"cannot reach the attempt's channel: {exc.strerror or exc}") from None
        sock.settimeout(timeout_s)
        try:
            sock.sendall(encode({"token": token, "tool": tool, "args": args}))
            reply = json.loads(read_line(sock))
        except (OSError, ValueError) as exc:
            raise ChannelError(f"the attempt's channel failed: {exc}") from None
    finally:
        sock.close()
    if not isinstance(reply, dict):
        raise ChannelError("the attempt's channel answered nonsense")
    if not reply.get("ok"):
        raise ChannelError(str(reply.get("error") or "refused"))
    return reply.get("result")
