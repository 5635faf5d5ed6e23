"""Prompt rendering with Jinja2 and strict undefined (an unknown variable fails the attempt)."""

from __future__ import annotations

import contextlib
import os
import stat
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from squad.core.errors import ConfigError

DEFAULT_TEMPLATE = Path(__file__).parent / "templates" / "prompt.md.j2"


def render_prompt(template: Path | None, card: dict[str, Any], attempt: int, last_error: str | None, *,
                  feedback: str = "", previous_runs: list[dict[str, Any]] | None = None,
                  verify_output: str = "", conflicts: list[str] | None = None) -> str:
    """Render the prompt of one attempt; any template problem is a ConfigError with the reason.

    `feedback` is the latest rejection's text ('' when none); `previous_runs` the earlier attempts;
    `verify_output` the output tail of the last verify when it failed (''); `conflicts` the files a
    merge of the card's base left with conflict markers ([]).
    """
    path = template or DEFAULT_TEMPLATE
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise ConfigError(f"prompt_template {path}: {exc.strerror}") from None
    try:
        return _compiled(str(path), mtime).render(card=card, attempt=attempt, last_error=last_error,
                                                   feedback=feedback, previous_runs=previous_runs or [],
                                                   verify_output=verify_output, conflicts=conflicts or [])
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
    return Path(os.path.join(os.path.realpath(workdir_root), PROMPTS_DIR, card_id, f"attempt-{attempt}.md"))


def _private_dir(folder: str) -> None:
    """`folder` exists as a directory (parents made as needed) with mode 0700, whatever it had."""
    try:
        os.mkdir(folder, PROMPT_DIR_MODE)
    except FileExistsError:
        if not os.path.isdir(folder):
            raise
    except FileNotFoundError:
        os.makedirs(folder, PROMPT_DIR_MODE, exist_ok=True)
    os.chmod(folder, PROMPT_DIR_MODE)


def write_prompt_file(path: Path, text: str) -> None:
    """Write a prompt readable by its owner only (0600, folders 0700): prompts carry card text.

    Never follows a symlink planted at the file's place, and fixes the mode of a file or folder
    that already existed with a looser one. Plain `os` calls: this runs for every attempt.
    """
    card_dir = os.path.dirname(path)
    for folder in (os.path.dirname(card_dir), card_dir):
        _private_dir(folder)
    data = memoryview(text.encode("utf-8"))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, PROMPT_FILE_MODE)
    try:
        os.fchmod(fd, PROMPT_FILE_MODE)
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


PROMPT_READ_MAX_BYTES = 4 * 1024 * 1024  # a kept prompt shown back; a bigger file is cut there


def read_prompt_file(workdir_root: Path, card_id: str, attempt: int) -> str | None:
    """The kept prompt of one attempt, or None when there is no such regular file.

    An agent runs as the worker's user next to `.prompts/`: it can plant a symlink at the file's
    place or at its card's folder (to `/etc/shadow`, say). Each step below the workdir is opened
    with `O_NOFOLLOW` relative to the one above it, so no link is followed; a FIFO or device is
    refused without blocking on it.
    """
    directory = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fds: list[int] = []
    try:
        fds.append(os.open(os.path.realpath(workdir_root), directory))
        for name in (PROMPTS_DIR, card_id):
            fds.append(os.open(name, directory, dir_fd=fds[-1]))
        fds.append(os.open(f"attempt-{attempt}.md", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                           dir_fd=fds[-1]))
        if not stat.S_ISREG(os.fstat(fds[-1]).st_mode):
            return None
        chunks: list[bytes] = []
        left = PROMPT_READ_MAX_BYTES
        while left > 0 and (chunk := os.read(fds[-1], min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks).decode("utf-8", errors="replace")
    except OSError:
        return None
    finally:
        for fd in fds:
            os.close(fd)


def remove_prompt_file(path: Path) -> None:
    """Delete an attempt's prompt file, and its card's folder once empty."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    with contextlib.suppress(OSError):  # not empty (another attempt's kept prompt) or already gone
        os.rmdir(os.path.dirname(path))
