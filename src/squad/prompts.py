"""Prompt rendering with Jinja2 and strict undefined (an unknown variable fails the attempt)."""

from __future__ import annotations

import contextlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from squad.errors import ConfigError

DEFAULT_TEMPLATE = Path(__file__).parent / "templates" / "prompt.md.j2"


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


PROMPTS_DIR = ".prompts"  # under SQUAD_WORKDIR
PROMPT_DIR_MODE = 0o700
PROMPT_FILE_MODE = 0o600


def prompt_path(workdir_root: Path, card_id: str, attempt: int) -> Path:
    """Where the prompt of one attempt is written: a per-card folder under `SQUAD_WORKDIR/.prompts`
    (the agent's `{prompt_file}`; the API reads a kept one back)."""
    return workdir_root.resolve() / PROMPTS_DIR / card_id / f"attempt-{attempt}.md"


def write_prompt_file(path: Path, text: str) -> None:
    """Write a prompt readable by its owner only (0600, folders 0700): prompts carry card text.

    Never follows a symlink planted at the file's place, and fixes the mode of a file or folder
    that already existed with a looser one.
    """
    for folder in (path.parent.parent, path.parent):
        folder.mkdir(mode=PROMPT_DIR_MODE, parents=True, exist_ok=True)
        os.chmod(folder, PROMPT_DIR_MODE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, PROMPT_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), PROMPT_FILE_MODE)
        handle.write(text)


def remove_prompt_file(path: Path) -> None:
    """Delete an attempt's prompt file, and its card's folder once empty."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with contextlib.suppress(OSError):  # not empty (another attempt's kept prompt) or already gone
        path.parent.rmdir()
