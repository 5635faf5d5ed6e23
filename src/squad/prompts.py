"""Prompt rendering with Jinja2 and strict undefined (an unknown variable fails the attempt)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from squad.errors import ConfigError

DEFAULT_TEMPLATE = Path(__file__).parent / "templates" / "prompt.md.j2"


def render_prompt(template: Path | None, card: dict[str, Any], attempt: int, last_error: str | None) -> str:
    """Render the prompt of one attempt; any template problem is a ConfigError with the reason."""
    path = template or DEFAULT_TEMPLATE
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"prompt_template {path}: {exc.strerror}") from None
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    try:
        return env.from_string(source).render(card=card, attempt=attempt, last_error=last_error)
    except jinja2.TemplateError as exc:
        raise ConfigError(f"prompt template {path.name}: {exc}") from None
