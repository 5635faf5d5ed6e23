"""The environment an agent or hook receives: the worker's, minus every secret of ours.

Agents run model-written commands on prompts that may carry hostile text, so an agent is treated
as untrusted: it must not be able to read the API token, the database or Redis URLs (or anything
containing their passwords) and steer the whole system with them. Every other variable passes
(an agent needs its own key, e.g. `ANTHROPIC_API_KEY`) unless the agent's `env_deny` globs name
it; the agent's `env` table adds variables last.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from pathlib import Path

from squad.config import AgentConfig, Settings
from squad.masking import url_secrets

__all__ = ["ATTEMPT_VARS", "agent_environment", "settings_secrets"]

#: The only `SQUAD_*` variables an agent sees: the ones describing its own attempt.
ATTEMPT_VARS = frozenset({"SQUAD_CARD_ID", "SQUAD_ATTEMPT", "SQUAD_TASK_ID", "SQUAD_WORKDIR"})
#: Shorter secrets would match too many innocent values (a password "a" is in every PATH).
MIN_SECRET_CHARS = 4


def settings_secrets(settings: Settings) -> set[str]:
    """Every secret value the settings hold: the token, each URL whole and each URL's password."""
    urls = {settings.redis_url, settings.broker, settings.results, settings.events, settings.database_url}
    found = set(urls)  # a URL without a password still says where the store and the broker are
    for url in urls:
        found |= url_secrets(url)
    if settings.api_token:
        found.add(settings.api_token)
    return {s for s in found if len(s) >= MIN_SECRET_CHARS}


def _denied(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def agent_environment(settings: Settings, agent: AgentConfig | None, *, card_id: str, attempt: int,
                      task_id: str, workdir: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The complete environment of one attempt's agent and hooks (nothing else is inherited)."""
    source = os.environ if base is None else base
    secrets = settings_secrets(settings)
    deny = agent.env_deny if agent is not None else []
    env: dict[str, str] = {}
    for name, value in source.items():
        if name.startswith("SQUAD_") or name == "USE_CELERY":
            continue
        if any(secret in value for secret in secrets):
            continue
        if _denied(name, deny):
            continue
        env[name] = value
    if agent is not None:
        env.update(agent.env)
    env.update({"SQUAD_CARD_ID": card_id, "SQUAD_ATTEMPT": str(attempt), "SQUAD_TASK_ID": task_id,
                "SQUAD_WORKDIR": str(workdir)})
    return env
