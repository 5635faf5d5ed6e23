"""What a card may ask of this installation: where its agent runs and for how long.

Card authors are not trusted with the machine: a card's `workdir` must lie inside `SQUAD_WORKDIR`
or one of `allowed_roots` (checked on import and again, after resolving symlinks, right before
an attempt starts, since a directory can be swapped for a link in between), and its time limits
cannot exceed the installation's hard limit (refused here; `Settings.limits_for` also clamps
what is already stored).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from squad.attempt.workspaces import repo_root
from squad.core.cards import CardSpec
from squad.core.errors import BacklogError, ConfigError, SquadError
from squad.core.safetext import excerpt
from squad.core.settings import Settings

__all__ = ["WorkdirEscape", "check_specs", "resolve_workdir", "roots"]


class WorkdirEscape(SquadError):
    """A card's working directory resolves outside every allowed root."""


def roots(settings: Settings) -> list[Path]:
    """`SQUAD_WORKDIR` and every allowed root, absolute (not yet resolved through symlinks)."""
    found = [settings.workdir, *settings.allowed_roots]
    return [Path(os.path.abspath(os.path.expanduser(root))) for root in found]


def _lexical(settings: Settings, card_id: str, workdir: str | None) -> Path:
    """The card's directory without touching the disk: relative paths are under `SQUAD_WORKDIR`."""
    base = Path(os.path.abspath(settings.workdir))
    if not workdir:
        return base / card_id
    if workdir.startswith("~"):
        raise WorkdirEscape(f"{excerpt(workdir)}: '~' is not expanded; use a path inside SQUAD_WORKDIR")
    return Path(os.path.normpath(base / workdir))


def _inside(path: Path | str, allowed: Iterable[Path | str]) -> bool:
    """`path` is a root or lies under one; both absolute and normalized (as `Path`, `abspath` and
    `realpath` give them), so a string prefix up to a separator is `Path.is_relative_to`, at a
    fraction of its cost (this runs twice per attempt)."""
    text = str(path)
    for root in map(str, allowed):
        if text == root or text.startswith(root if root.endswith(os.sep) else root + os.sep):
            return True
    return False


def _outside_message(workdir: str) -> str:
    return (f"{excerpt(workdir)} is outside SQUAD_WORKDIR and every allowed root"
            " (add its parent to allowed_roots / SQUAD_ALLOWED_ROOTS)")


def check_workdir(settings: Settings, card_id: str, workdir: str | None) -> Path:
    """The card's directory as written, or WorkdirEscape (`..` escapes, `~`, foreign absolute paths)."""
    allowed = [str(root) for root in roots(settings)]
    return _checked(settings, card_id, workdir, allowed, [os.path.realpath(root) for root in allowed])


def _checked(settings: Settings, card_id: str, workdir: str | None, allowed: list[str],
             real_roots: list[str]) -> Path:
    path = _lexical(settings, card_id, workdir)
    if not _inside(path, allowed + real_roots):
        raise WorkdirEscape(_outside_message(workdir or str(path)))
    return path


def resolve_workdir(settings: Settings, card_id: str, workdir: str | None) -> Path:
    """The card's directory with symlinks resolved; WorkdirEscape if that leaves the allowed roots.

    Called right before an attempt's hooks and agent start: a check at import time alone would let
    a symlink planted later (by an earlier agent, say) send the next agent anywhere. The roots are
    resolved once per call, for both checks.
    """
    allowed = [str(root) for root in roots(settings)]
    real_roots = [os.path.realpath(root) for root in allowed]
    path = _checked(settings, card_id, workdir, allowed, real_roots)
    real = os.path.realpath(path)
    if not _inside(real, real_roots):
        raise WorkdirEscape(f"working directory {excerpt(str(path))} resolves to {excerpt(real)},"
                            " outside SQUAD_WORKDIR and every allowed root")
    return Path(real)


def _check_repo(settings: Settings, raw: str) -> None:
    """A card's `repo` inside the allowed roots, and so is the repository it is part of (when it
    exists already; `confined_repo` checks it again before each attempt)."""
    path = settings.check_allowed(Path(raw), "workspace repo")
    try:
        root = repo_root(path)
    except ConfigError:  # not there (or not a repository) yet: the attempt says so
        return
    settings.check_allowed(root, f"the repository of workspace repo {path}:")


def check_specs(specs: Iterable[CardSpec], settings: Settings) -> None:
    """Reject cards this installation will not run: every problem, one line each, naming the card."""
    problems: list[str] = []
    for spec in specs:
        if spec.workdir is not None:
            try:
                check_workdir(settings, spec.card_id, spec.workdir)
            except WorkdirEscape as exc:
                problems.append(f"card {spec.card_id}: workdir: {exc}")
        if spec.repo is not None:
            try:
                _check_repo(settings, spec.repo)
            except ConfigError as exc:
                problems.append(f"card {spec.card_id}: repo: {exc}")
        for name in ("time_limit", "soft_time_limit"):
            value = getattr(spec, name)
            if value is not None and value > settings.time_limit:
                problems.append(f"card {spec.card_id}: {name}: {value:g} s exceeds the hard limit"
                                f" SQUAD_TIME_LIMIT ({settings.time_limit:g} s)")
    if problems:
        raise BacklogError(problems)
