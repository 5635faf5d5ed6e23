#!/usr/bin/env python3
"""Fake agent that talks back through `squad mcp` with the official MCP client (stdio).

argv[1]: a JSON plan file, {card_id: {step: ...}}; argv[2]: a folder where it writes
`<card_id>.<attempt>.json` with what each call returned (or its error). Steps, in this order:
`tools` (always: list the tools), `progress` [percent, step], `note` text, `get_card` (true),
`create` [cards], `ask` [question, choices], `reuse` (call report_progress with the credential of
this card's previous attempt, read from the result file), `gate` (a file to wait for before the
end), `exit` (exit code, default 0), `heartbeat` (print a line every 0.3 s, except while it asks).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any


async def call(session: Any, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await session.call_tool(tool, args)
    text = "".join(getattr(c, "text", "") for c in result.content)
    return {"error": result.is_error, "text": text, "structured": result.structured_content}


async def talk(env: dict[str, str], plan: dict[str, Any], record: dict[str, Any]) -> None:
    from mcp import ClientSession, StdioServerParameters, stdio_client  # after the heartbeat started

    params = StdioServerParameters(command=sys.executable, args=["-m", "squad", "mcp"], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = await session.list_tools()
        record["tools"] = sorted(t.name for t in tools.tools)
        if "progress" in plan:
            percent, step = plan["progress"]
            record["progress"] = await call(session, "report_progress", {"percent": percent, "step": step})
        if "note" in plan:
            record["note"] = await call(session, "add_note", {"text": plan["note"]})
        if plan.get("get_card"):
            record["get_card"] = await call(session, "get_card", {})
        if "create" in plan:
            record["create"] = await call(session, "create_cards", {"cards": plan["create"]})
        if "ask" in plan:
            record["_asking"] = True  # the heartbeat stops: from now on only the question keeps it alive
            question, choices = plan["ask"]
            args: dict[str, Any] = {"question": question}
            if choices is not None:
                args["choices"] = choices
            record["ask"] = await call(session, "ask_human", args)
            record["_asking"] = False  # alive again: the heartbeat goes on until the agent ends


def main() -> int:
    print("mcp agent starting", flush=True)
    plans = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    card_id, attempt = os.environ["SQUAD_CARD_ID"], int(os.environ["SQUAD_ATTEMPT"])
    plan = plans.get(card_id, {})
    env = dict(os.environ)
    record: dict[str, Any] = {"mcp_dir": env.get("SQUAD_MCP_DIR"), "mcp_token": env.get("SQUAD_MCP_TOKEN")}
    if plan.get("heartbeat"):  # a line every 0.3 s except while it asks: the stall timer sees it alive
        def beat() -> None:
            while True:
                if not record.get("_asking"):
                    print("alive", flush=True)
                time.sleep(0.3)
        threading.Thread(target=beat, daemon=True).start()
    asyncio.run(talk(env, plan, record))
    record.pop("_asking", None)
    if plan.get("reuse") and attempt > 1:
        old = json.loads((out / f"{card_id}.{attempt - 1}.json").read_text())
        stale = {**env, "SQUAD_MCP_TOKEN": old["mcp_token"]}  # the earlier credential on this attempt's socket
        reuse: dict[str, Any] = {}
        asyncio.run(talk(stale, {"progress": [60, "stale token"]}, reuse))
        record["reuse_token"] = reuse.get("progress")
        gone = {**env, "SQUAD_MCP_DIR": old["mcp_dir"], "SQUAD_MCP_TOKEN": old["mcp_token"]}  # its own socket
        reuse = {}
        asyncio.run(talk(gone, {"progress": [60, "old attempt"]}, reuse))
        record["reuse_socket"] = reuse.get("progress")
    (out / f"{card_id}.{attempt}.json").write_text(json.dumps(record))
    gate = plan.get("gate")
    if gate:
        deadline = time.monotonic() + 120
        while not Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    print(f"mcp agent done: {card_id} attempt {attempt}", flush=True)
    exits = plan.get("exit", 0)
    code = exits[attempt - 1] if isinstance(exits, list) else exits
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
