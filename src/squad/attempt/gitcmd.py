"""Every git command squad runs goes through `run_git`: it never runs what a repository supplies.

An agent writes its worktree, and through it the repository's shared config (`.git/config`), its
hooks and `.gitattributes`. Squad's own git (the worker's commit and facts, the API's diff and
workspace list, `squad workspace list`, approve, doctor) would otherwise run whatever the agent
planted there — `core.fsmonitor`, hooks, `diff.external`, textconv, clean/smudge filters, merge
drivers, `core.sshCommand`, credential helpers — with squad's environment. So each call

- gets an environment built like an agent's (docs/security.md): no `SQUAD_*`, nothing holding a
  secret of ours, no inherited `GIT_DIR`-style variables, no editor, pager or terminal prompt;
- overrides the hooks, fsmonitor, external diff, signing and `ext::` transport on the command line;
- neutralises every executable-naming setting the repository's own config (the `local` and
  `worktree` scopes, includes followed) adds — the operator's global and system settings stay;
- runs diff-like commands with `--no-ext-diff --no-textconv`.

Git's own ownership check (`safe.directory`) is never relaxed.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from squad.agents.orphans import run_helper
from squad.core.errors import SquadError
from squad.core.masking import url_secrets

__all__ = ["GIT_TIMEOUT_S", "SAFE_CONFIG", "WorkspaceError", "git_environment", "repo_overrides", "run_git"]

GIT_TIMEOUT_S = 120.0
#: Shorter secrets would match too many innocent values (the same bound as the agent env).
MIN_SECRET_CHARS = 4

#: `-c` settings on every call: no hooks (squad's checkpoint commits are not the repository's to
#: refuse, and hooks live in the agent-writable git dir), no fsmonitor, no external diff, no
#: signing program, no `ext::` transport, no automatic gc or submodule recursion.
SAFE_CONFIG: tuple[str, ...] = (
    "core.fsmonitor=false",
    "core.hooksPath=/dev/null",
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "push.gpgSign=false",
    "protocol.ext.allow=never",
    "submodule.recurse=false",
    "status.submoduleSummary=false",
    "gc.auto=0",
    "maintenance.auto=false",
)

#: Environment variables squad sets for git: no prompts, no editor or pager, a stable language.
FIXED_ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_EDITOR": ":", "GIT_SEQUENCE_EDITOR": ":",
             "GIT_PAGER": "cat", "PAGER": "cat"}

#: The `GIT_*` variables of the operator that pass (identity, transport, TLS, tracing, config files).
_GIT_VARS_KEPT = re.compile(r"^GIT_(?:AUTHOR_|COMMITTER_|SSH|SSL_|HTTP_|PROXY_|TRACE|CONFIG_GLOBAL$|CONFIG_SYSTEM$"
                            r"|CONFIG_NOSYSTEM$|ASKPASS$|EXEC_PATH$)")

#: Settings that name a program (or a transport command) git may run. From the repository's own
#: config they are replaced by the operator's (system/global) value or an inert one.
_EXEC_KEY = re.compile(r"""^(?:
      filter\..+\.(?:clean|smudge|process)
    | diff\..+\.(?:textconv|command)
    | merge\..+\.driver
    | credential\.(?:.+\.)?helper
    | core\.(?:sshcommand|askpass|gitproxy|alternaterefscommand|editor|pager)
    | sequence\.editor | diff\.external | interactive\.difffilter | pager\..+
    | gpg\.(?:.+\.)?program | gpg\.ssh\.defaultkeycommand
    | remote\..+\.(?:uploadpack|receivepack)
    | submodule\..+\.update
)$""", re.IGNORECASE | re.VERBOSE)

#: What replaces a repository-set program when the operator set none (empty means "none").
_INERT = (
    (re.compile(r"^merge\..+\.driver$", re.I), "false"),  # a conflict, never a silent merge
    (re.compile(r"^core\.sshcommand$", re.I), "ssh"),
    (re.compile(r"^gpg\.program$", re.I), "gpg"),
    (re.compile(r"^gpg\.ssh\.program$", re.I), "ssh-keygen"),
    (re.compile(r"^gpg\.x509\.program$", re.I), "gpgsm"),
    (re.compile(r"^submodule\..+\.update$", re.I), "none"),
)
#: Multi-valued settings: an empty value resets the list, then the operator's values come back.
_MULTI = re.compile(r"^credential\.(?:.+\.)?helper$", re.I)
#: Settings where git keeps the FIRST value (a `-c` cannot override them): refused outright.
_FIRST_WINS = re.compile(r"^(?:remote\..+\.(?:uploadpack|receivepack)|core\.gitproxy)$", re.I)
_PROTECTED_SCOPES = frozenset({"system", "global", "command"})

#: Commands that never run a filter, driver, helper or transport: no config scan before them.
_PLUMBING = frozenset({"rev-parse", "config", "show-ref", "for-each-ref", "merge-base", "symbolic-ref",
                       "check-ref-format", "update-ref", "cat-file", "ls-tree", "rev-list", "branch", "worktree",
                       "read-tree", "var", "version"})
#: ... except these subcommands (`worktree add` checks files out: smudge filters).
_NOT_PLUMBING = frozenset({("worktree", "add"), ("worktree", "move"), ("worktree", "repair")})
#: Commands that print diffs: external diff drivers and textconv are refused on their command line.
_DIFF_LIKE = frozenset({"diff", "log", "show", "format-patch", "diff-tree", "diff-index", "diff-files"})


class WorkspaceError(SquadError):
    """A git operation on a workspace failed."""


def _secrets_in(environ: Mapping[str, str], extra: Iterable[str]) -> set[str]:
    """Our secrets: every `SQUAD_*` value whole (token, URLs), each URL's password, and `extra`."""
    found = {value for name, value in environ.items() if name.startswith("SQUAD_") and value}
    for value in list(found):
        if "://" in value:
            found |= set(url_secrets(value))
    found |= set(extra)
    return {s for s in found if len(s) >= MIN_SECRET_CHARS}


def git_environment(extra: Mapping[str, str] | None = None, secrets: Iterable[str] = (),
                    base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a git call: `base` (default: ours) scrubbed like an agent's, then `extra`.

    Dropped: `SQUAD_*` and `USE_CELERY`, any value holding one of our secrets (the `SQUAD_*`
    values, their URL passwords, and `secrets`, e.g. `settings_secrets(settings)`), and the
    `GIT_*` variables that would point git elsewhere (`GIT_DIR`, `GIT_INDEX_FILE`,
    `GIT_EXTERNAL_DIFF`, `GIT_CONFIG_PARAMETERS`, …).
    """
    source = os.environ if base is None else base
    known = _secrets_in(source, secrets)
    env: dict[str, str] = {}
    for name, value in source.items():
        if name.startswith("SQUAD_") or name == "USE_CELERY":
            continue
        if name.startswith("GIT_") and not _GIT_VARS_KEPT.match(name):
            continue
        if any(secret in value for secret in known):
            continue
        env[name] = value
    env.update(FIXED_ENV)
    env.update(extra or {})
    return env


def _parse_config(out: bytes) -> list[tuple[str, str, str | None]]:
    """`git config --list --show-scope -z` records: (scope, key, value or None)."""
    records: list[tuple[str, str, str | None]] = []
    parts = out.decode("utf-8", errors="replace").split("\0")
    for scope, entry in zip(parts[0::2], parts[1::2], strict=False):
        key, sep, value = entry.partition("\n")
        if key:
            records.append((scope, key, value if sep else None))
    return records


def _inert(key: str) -> str:
    for pattern, value in _INERT:
        if pattern.match(key):
            return value
    return ""


def repo_overrides(records: list[tuple[str, str, str | None]]) -> list[str]:
    """`-c` settings undoing each program the repository's own config names (operator values kept);
    WorkspaceError for one that cannot be undone that way."""
    protected: dict[str, list[str]] = {}
    planted: list[str] = []
    for scope, key, value in records:
        if not _EXEC_KEY.match(key):
            continue
        if scope in _PROTECTED_SCOPES:
            protected.setdefault(key.lower(), []).append(value or "")
        elif key not in planted:
            planted.append(key)
    overrides: list[str] = []
    for key in planted:
        kept = protected.get(key.lower(), [])
        if _FIRST_WINS.match(key):
            raise WorkspaceError(f"the repository's own config sets {key}, a program squad will not run"
                                 " (remove it from .git/config)")
        if _MULTI.match(key):
            overrides += [f"{key}=", *(f"{key}={v}" for v in kept)]
        else:
            overrides.append(f"{key}={kept[-1] if kept else _inert(key)}")
        if key.lower().startswith("filter."):
            overrides.append(f"{key.rsplit('.', 1)[0]}.required=false")
    return overrides


def _needs_scan(args: list[str]) -> bool:
    if not args or args[0] not in _PLUMBING:
        return True
    return len(args) > 1 and (args[0], args[1]) in _NOT_PLUMBING


def _run(argv: list[str], cwd: Path, env: Mapping[str, str], timeout: float,
         input_bytes: bytes | None) -> subprocess.CompletedProcess[bytes]:
    try:  # run_helper: known by its pid, so no attempt's end in this process takes it for a leftover
        return run_helper(argv, cwd=cwd, env=dict(env), timeout=timeout, input=input_bytes)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WorkspaceError(f"git {argv[-1] if len(argv) < 2 else _subcommand(argv)} failed: {exc}") from None


def _subcommand(argv: list[str]) -> str:
    rest = [a for a in argv[1:] if not a.startswith("-")]
    return next((a for a in rest if "=" not in a), "?")


def _base_argv(git_dir: Path | None, work_tree: Path | None) -> list[str]:
    argv = ["git", "--no-pager"]
    for item in SAFE_CONFIG:
        argv += ["-c", item]
    if git_dir is not None:
        argv.append(f"--git-dir={git_dir}")
    if work_tree is not None:
        argv.append(f"--work-tree={work_tree}")
    return argv


def run_git(args: list[str], cwd: Path, *, check: bool = True, env: Mapping[str, str] | None = None,
            timeout: float = GIT_TIMEOUT_S, secrets: Iterable[str] = (), git_dir: Path | None = None,
            work_tree: Path | None = None, input_bytes: bytes | None = None) -> str:
    """Run `git <args>` (argv, never a shell) safely; its stdout, or WorkspaceError with git's error line.

    `env` adds variables (e.g. `GIT_INDEX_FILE`, an identity); `secrets` names more values to
    keep out of git's environment (`settings_secrets(settings)`); `git_dir`/`work_tree` name the
    repository explicitly instead of letting git discover it from `cwd`.
    """
    full_env = git_environment(env, secrets)
    base = _base_argv(git_dir, work_tree)
    overrides: list[str] = []
    if _needs_scan(args):
        listing = _run([*base, "config", "--list", "--show-scope", "-z"], cwd, full_env, timeout, None)
        if listing.returncode == 0:
            for item in repo_overrides(_parse_config(listing.stdout)):
                overrides += ["-c", item]
    tail = list(args)
    if tail and tail[0] in _DIFF_LIKE:
        tail[1:1] = ["--no-ext-diff", "--no-textconv"]
    proc = _run([*base, *overrides, *tail], cwd, full_env, timeout, input_bytes)
    out = proc.stdout.decode(errors="replace")
    if check and proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines() or [f"exit code {proc.returncode}"]
        raise WorkspaceError(f"git {' '.join(args[:2])} in {cwd}: {lines[-1] if 'fatal' not in lines[0] else lines[0]}")
    return out
