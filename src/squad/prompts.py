"""Prompt rendering with Jinja2 and strict undefined (an unknown variable fails the attempt)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from squad.errors import ConfigError

DEFAULT_TEMPLATE = Path(__file__).parent / "templates" / "prompt.md.j2"
PROMPTS_DIR = ".prompts"  # under SQUAD_WORKDIR


def prompt_path(workdir: Path, card_id: str, attempt: int) -> Path:
    """Where the prompt of one attempt is written (the agent's `{prompt_file}`; the API reads it back)."""
    return workdir.resolve() / PROMPTS_DIR / f"{card_id}-{attempt}.md"


def render_prompt(template: Path | None, card: dict[str, Any], attempt: int, last_error: str | None, *,
                  feedback: str = "", previous_runs: list[dict[str, Any]] | None = None) -> str:
    """Render the prompt of one attempt; any template problem is a ConfigError with the reason.

    `feedback` is the latest rejection's text ('' when none); `previous_runs` the earlier attempts.
    """
    path = template or DEFAULT_TEMPLATE
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise ConfigError(f"prompt_template {path}: {exc.strerror}") from None
    try:
        return _compiled(str(path), mtime).render(card=card, attempt=attempt, last_error=last_error,
                                                   feedback=feedback, previous_runs=previous_runs or [])
    except jinja2.TemplateError as exc:
        raise ConfigError(f"prompt template {path.name}: {exc}") from None


@lru_cache(maxsize=32)
def _compiled(path: str, _mtime_ns: int) -> jinja2.Template:
    """Compile once per file version (compiling costs more than running an agent like `true`)."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    try:
        source = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"prompt_template {path}: {exc.strerror}") from None
    return env.from_string(source)
