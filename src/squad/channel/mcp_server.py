"""`squad mcp`: the MCP server (stdio, the official `mcp` SDK) an agent starts to talk back to squad.

It holds no authority of its own: every tool call goes over the attempt's socket (`channel.wire`)
to the process running the attempt, which checks the credential and that the attempt still holds
its card. It needs only the attempt's environment: `SQUAD_CARD_ID`, `SQUAD_MCP_DIR` and
`SQUAD_MCP_TOKEN` (docs/agents.md).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from pydantic import Field

from squad.channel.wire import DIR_ENV, TOKEN_ENV, ChannelError, call
from squad.core.errors import SquadError

INSTRUCTIONS = (
    "squad runs this agent on one card of its backlog. These tools talk to squad about that card: report "
    "progress, leave notes, read the card, split it into sub-cards, and ask a person when stuck."
)


def make_server(env: Mapping[str, str]) -> Any:
    """The MCP server of one attempt (SquadError when its environment lacks the channel)."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    folder, token = env.get(DIR_ENV), env.get(TOKEN_ENV)
    if not folder or not token:
        raise SquadError(f"squad mcp runs inside a squad attempt: {DIR_ENV} and {TOKEN_ENV} are not set")
    card_id = env.get("SQUAD_CARD_ID", "")
    server: Any = MCPServer("squad", instructions=INSTRUCTIONS + (f" This card: {card_id}." if card_id else ""))

    async def forward(tool: str, args: dict[str, Any]) -> Any:
        try:  # in a thread: ask_human may wait an hour, and the session must go on answering pings
            return await anyio.to_thread.run_sync(functools.partial(call, Path(folder), token, tool, args),
                                                  abandon_on_cancel=True)
        except ChannelError as exc:
            raise ToolError(str(exc)) from None

    @server.tool()
    async def report_progress(percent: Annotated[int, Field(description="0-100")],
                              step: Annotated[str, Field(description="what the agent is doing now")]) -> str:
        """Report how far the card's work is (the same as printing `::progress <percent> <step>`)."""
        return str(await forward("report_progress", {"percent": percent, "step": step}))

    @server.tool()
    async def add_note(text: str) -> str:
        """Leave a note on the card: a log entry of level NOTE that people see on the board."""
        return str(await forward("add_note", {"text": text}))

    @server.tool()
    async def get_card() -> dict[str, Any]:
        """The card being worked on: its fields, this attempt, the reviewer's feedback, the last verify
        output, its sub-cards, and its dependencies' status, branch and landed commit."""
        return dict(await forward("get_card", {}))

    @server.tool()
    async def create_cards(cards: Annotated[list[dict[str, Any]], Field(description=(
            "sub-cards, at most 100 per call: each {title, description?, card_id?, priority? (0-9), "
            "depends_on? (ids of new or existing cards), acceptance_criteria? (list of text)}; ids default "
            "to <this card>.<n>"))]) -> dict[str, Any]:
        """Split this card: add sub-cards (validated like a backlog import, all or nothing). This card
        waits (WAITING) after its attempt until they are all DONE. Returns their ids."""
        return dict(await forward("create_cards", {"cards": cards}))

    @server.tool()
    async def ask_human(question: str, choices: list[str] | None = None) -> str:
        """Ask a person and wait for the answer (the card shows NEEDS_INPUT meanwhile; time limits
        stand still). Returns the answer, or "no answer" when none came in time."""
        return str(await forward("ask_human", {"question": question, "choices": choices}))

    return server


def serve(env: Mapping[str, str]) -> None:
    """Run the server on stdin/stdout until the agent closes it."""
    make_server(env).run("stdio")
