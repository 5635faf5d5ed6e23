"""The environment an agent or hook receives: the worker's, minus every secret of ours.

Agents run model-written commands on prompts that may carry hostile text, so an agent is treated
as untrusted: it must not be able to read the API token, the database or Redis URLs (or anything
containing their passwords) and steer the whole system with them. Every other variable passes
(an agent needs its own key, e.g. `ANTHROPIC_API_KEY`) unless the agent's `env_deny` globs name
it; the agent's `env` table adds variables last.
"""

from __future__ import annotations

import fnmatch
import functools
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from squad.core.masking import url_secrets
from squad.core.settings import AgentConfig, Settings

__all__ = ["ATTEMPT_VARS", "agent_environment", "settings_secrets"]

#: The only `SQUAD_*` variables an agent sees: the ones describing its own attempt.
ATTEMPT_VARS = frozenset({"SQUAD_CARD_ID", "SQUAD_ATTEMPT", "SQUAD_TASK_ID", "SQUAD_WORKDIR",
                          # the agents' channel back (`squad mcp`, docs/agents.md): the attempt's own
                          "SQUAD_MCP_DIR", "SQUAD_MCP_TOKEN"})
#: Shorter secrets would match too many innocent values (a password "a" is in every PATH).
MIN_SECRET_CHARS = 4


@functools.lru_cache(maxsize=64)
def _url_secrets(url: str) -> frozenset[str]:
    """`url_secrets`, parsed once per URL (the settings' URLs are the same for every attempt)."""
    return frozenset(url_secrets(url))


def settings_secrets(settings: Settings) -> set[str]:
    """Every secret value the settings hold: the token, each URL whole and each URL's password."""
    urls = {settings.redis_url, settings.broker, settings.results, settings.events, settings.database_url}
    found = set(urls)  # a URL without a password still says where the store and the broker are
    for url in urls:
        found |= _url_secrets(url)
    if settings.api_token:
        found.add(settings.api_token)
    return {s for s in found if len(s) >= MIN_SECRET_CHARS}


def _denied(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _scrubbed(source: Mapping[str, str], secrets: Iterable[str], deny: list[str]) -> dict[str, str]:
    """`source` without our variables, anything holding a secret, and what `deny` names."""
    env: dict[str, str] = {}
    for name, value in source.items():
        if name.startswith("SQUAD_") or name == "USE_CELERY":
            continue
        if any(secret in value for secret in secrets):
            continue
        if _denied(name, deny):
            continue
        env[name] = value
    return env


#: The last scrub of `os.environ`: (its raw data then, the secrets and deny globs it was for, result).
_last: list[tuple[dict[bytes, bytes], tuple[str, ...], tuple[str, ...], dict[str, str]]] = []


def _scrubbed_environ(secrets: set[str], deny: list[str]) -> dict[str, str]:
    """`_scrubbed(os.environ, ...)`, done again only when the environment, the secrets or the deny
    globs changed: decoding and checking every variable for every attempt cost more than running
    `true`. `os.environ._data` (raw bytes) is what every change through `os.environ` writes to."""
    raw = getattr(os.environ, "_data", None)
    if not isinstance(raw, dict):
        return _scrubbed(os.environ, secrets, deny)
    key_secrets, key_deny = tuple(sorted(secrets)), tuple(deny)
    last = _last[0] if _last else None
    if last is not None and last[1] == key_secrets and last[2] == key_deny and last[0] == raw:
        return dict(last[3])
    snapshot = dict(raw)  # taken first: a change made while scrubbing is seen by the next call
    env = _scrubbed(os.environ, secrets, deny)
    _last[:] = [(snapshot, key_secrets, key_deny, env)]
    return dict(env)


def agent_environment(settings: Settings, agent: AgentConfig | None, *, card_id: str, attempt: int,
                      task_id: str, workdir: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The complete environment of one attempt's agent and hooks (nothing else is inherited)."""
    secrets = settings_secrets(settings)
    deny = agent.env_deny if agent is not None else []
    env = _scrubbed_environ(secrets, deny) if base is None else _scrubbed(base, secrets, deny)
    if agent is not None:
        env.update(agent.env)
    env.update({"SQUAD_CARD_ID": card_id, "SQUAD_ATTEMPT": str(attempt), "SQUAD_TASK_ID": task_id,
                "SQUAD_WORKDIR": str(workdir)})
    return env
