"""Agent presets: the real coding agents' command lines, in one place.

The built-in agents (`all_agents`, `agent_for`), the agents section of `squad init`'s squad.toml and
`squad agents check` all come from `PRESETS`, so the three can never disagree. Flags as of the
agents' current CLIs (late 2026):

- Claude Code: `claude -p` (print mode) with `--output-format stream-json --verbose`; edits need a
  permission mode that allows them unattended (`acceptEdits`); `--resume <session id>`.
- Codex: `codex exec --json` streams JSONL events; `--full-auto` lets it edit its working
  directory; a session continues with `codex exec … resume <thread id> <prompt>`.
- Aider: `--message-file` runs one instruction and exits; `--yes-always` answers its questions;
  it commits its own edits on the card branch (no session to resume).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

from squad.core.errors import ConfigError
from squad.core.settings import AgentConfig, Settings


@dataclass(frozen=True)
class Preset:
    """One agent preset: its configuration, the argv that prints its version, and a note."""

    name: str
    config: AgentConfig
    version_command: list[str]
    note: str


#: squad's tools (`squad mcp`, docs/agents.md) as Claude Code names them, and its MCP configuration
SQUAD_TOOLS = ("report_progress", "add_note", "get_card", "create_cards", "ask_human")
CLAUDE_MCP_CONFIG = json.dumps({"mcpServers": {"squad": {"command": "squad", "args": ["mcp"]}}})
CLAUDE_ALLOWED_TOOLS = ",".join(f"mcp__squad__{tool}" for tool in SQUAD_TOOLS)

PRESETS: dict[str, Preset] = {
    p.name: p for p in (
        Preset("claude", AgentConfig(
            command=["claude", "-p", "--output-format", "stream-json", "--verbose",
                     "--permission-mode", "acceptEdits",
                     "--mcp-config", CLAUDE_MCP_CONFIG, "--allowedTools", CLAUDE_ALLOWED_TOOLS],
            prompt="stdin", parser="claude-stream-json", resume=["--resume", "{session_id}"]),
            ["claude", "--version"],
            "Claude Code; the final `result` event decides success"),
        Preset("codex", AgentConfig(
            command=["codex", "exec", "--json", "--full-auto", "--skip-git-repo-check",
                     "-c", 'mcp_servers.squad.command="squad"', "-c", 'mcp_servers.squad.args=["mcp"]'],
            prompt="arg", parser="codex-json", resume=["resume", "{session_id}"]),
            ["codex", "--version"],
            "OpenAI Codex CLI; a turn.failed or error event fails the attempt"),
        Preset("aider", AgentConfig(
            command=["aider", "--yes-always", "--no-pretty", "--no-stream", "--no-check-update",
                     "--message-file", "{prompt_file}"],
            prompt="file", parser="plain"),
            ["aider", "--version"],
            "Aider; commits its own edits"),
    )
}


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(item) for item in items) + "]"


def agents_toml() -> str:
    """The `[agents.*]` sections of `squad init`'s squad.toml, generated from the presets."""
    blocks: list[str] = []
    for p in PRESETS.values():
        cfg = p.config
        lines = [f"[agents.{p.name}]                 # {p.note}",
                 f"command = {_toml_list(cfg.command)}",
                 f'prompt = "{cfg.prompt}"',
                 f'parser = "{cfg.parser}"']
        if cfg.resume:
            lines.append(f"resume = {_toml_list(cfg.resume)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


#: The built-in demo agents: name -> extra arguments of `python -m squad.agents.demo`.
_DEMO_AGENTS = {"demo": [], "demo-flaky": ["--fail-first"]}


def _builtin_agent(name: str) -> AgentConfig | None:
    """The built-in agent `name` (a demo agent or a preset, a fresh copy), or None. Built alone: building
    every preset, a deep copy each, for every attempt cost more than running `true`."""
    if name in _DEMO_AGENTS:
        # The built-in demo agent is ours: it keeps its SQUAD_DEMO_* knobs, which the scrubbed agent
        # environment would otherwise drop with every other SQUAD_* variable.
        demo_env = {k: v for k, v in os.environ.items() if k.startswith("SQUAD_DEMO_")}
        return AgentConfig(command=[sys.executable, "-m", "squad.agents.demo", *_DEMO_AGENTS[name]],
                           prompt="stdin", parser="markers", env=demo_env)
    return PRESETS[name].config.model_copy(deep=True) if name in PRESETS else None


def all_agents(settings: Settings) -> dict[str, AgentConfig]:
    """Built-in agents (the demo agents, then the presets) overlaid with the agents of `squad.toml`."""
    builtin = {name: agent for name in (*_DEMO_AGENTS, *PRESETS) if (agent := _builtin_agent(name)) is not None}
    return {**builtin, **settings.agents}


def agent_for(settings: Settings, agent: str | None, squad: str | None) -> tuple[str, AgentConfig]:
    """Pick the agent of a card: its own, else its squad's, else the default."""
    name = agent or (settings.squads.get(squad) if squad else None) or settings.default_agent
    # squad.toml's agents override the built-in ones of the same name; only the one asked for is built.
    found = settings.agents[name] if name in settings.agents else _builtin_agent(name)
    if found is None:
        raise ConfigError(f"unknown agent {name!r} (configured: {', '.join(sorted(all_agents(settings)))})")
    return name, found
