"""Git worktrees per card: create or reuse, commit after each attempt, save and remove, gc.

A card with a repository (`[workspace] repo` or the card's `repo`) runs in its own worktree at
`SQUAD_WORKDIR/<card_id>` on branch `<branch_prefix><card_id>`, so two cards on one repository
never share files and the repository's own checkout is never touched. Every `git worktree` and
branch operation on one repository holds a file lock (fcntl, so it works across worker processes
on one machine): git itself refuses concurrent `worktree add`s with a lock error. Removing a
worktree never loses work: uncommitted changes are first saved as a patch, and the branch is kept.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog

from squad.attempt.gitcmd import WorkspaceError
from squad.attempt.gitcmd import run_git as git
from squad.core.cards import Card, GitFacts
from squad.core.errors import ConfigError, SquadError
from squad.core.safetext import excerpt
from squad.core.settings import Settings
from squad.core.statuses import Status

log = structlog.get_logger(__name__)

LOCK_TIMEOUT_S = 300.0
LOCK_POLL_S = 0.05
LOCK_FILE = "squad-worktrees.lock"
ARCHIVE_DIR = ".archive"
DAY_S = 86_400.0
DISK_USAGE_CACHE_S = 15.0
#: branch config key holding the commit a card's branch was created from
BASE_KEY = "squadbase"
SQUAD_COMMITTER = ("squad", "squad@localhost")

#: saves a patch of uncommitted work (e.g. on the card's latest run) before a removal
PatchSink = Callable[[str, str], None]


class DependenciesConflict(WorkspaceError):
    """The branches of a card's dependencies do not merge cleanly (`dependencies conflict`)."""


@dataclass(frozen=True)
class Workspace:
    """Where a card's worktree lives and which branch it works on."""

    card_id: str
    repo: Path
    base: str | None
    branch: str
    path: Path
    #: the shared remote (`[workspace] remote`): card branches are pushed there and fetched from there
    remote: str | None = None


@dataclass(frozen=True)
class FileStat:
    """One file of a diff."""

    path: str
    insertions: int
    deletions: int


@dataclass(frozen=True)
class WorkspaceInfo:
    """One card worktree under SQUAD_WORKDIR on this machine (`squad workspace list`, `GET /api/workspaces`)."""

    card_id: str
    branch: str | None
    path: str
    size_bytes: int
    age_s: float
    dirty: bool
    status: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


# ---- git ------------------------------------------------------------------------------------
def _ok(args: list[str], cwd: Path) -> bool:
    try:
        git(args, cwd)
        return True
    except WorkspaceError:
        return False


def repo_root(repo: Path) -> Path:
    """The top level of the repository's main checkout (ConfigError when it is not a repository)."""
    if not repo.is_dir():
        raise ConfigError(f"workspace repo {repo}: no such directory")
    try:
        common = Path(git(["rev-parse", "--path-format=absolute", "--git-common-dir"], repo).strip())
    except WorkspaceError:
        raise ConfigError(f"workspace repo {repo}: not a git repository") from None
    # the main checkout is the parent of the common git dir (worktrees share it)
    return common.parent if common.name == ".git" else common


def git_common_dir(repo: Path) -> Path:
    """The repository's git dir shared by its worktrees (where commits of every worktree go)."""
    return Path(git(["rev-parse", "--path-format=absolute", "--git-common-dir"], repo).strip())


@contextmanager
def repo_lock(repo: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Serialise worktree and branch operations on one repository across processes."""
    path = git_common_dir(repo) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise WorkspaceError(f"repository {repo} stayed locked for {timeout_s:.0f}s") from None
                time.sleep(LOCK_POLL_S)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# ---- which workspace ------------------------------------------------------------------------
def workspace_for(settings: Settings, card: Card) -> Workspace | None:
    """The card's workspace, or None when neither the card nor `[workspace]` names a repository."""
    cfg = settings.workspace
    raw = card.repo or (str(cfg.repo) if cfg.repo else None)
    if not raw:
        return None
    root = confined_repo(settings, raw)
    return Workspace(card_id=card.card_id, repo=root, base=card.base or cfg.base,
                     branch=f"{cfg.branch_prefix}{card.card_id}",
                     path=Path(os.path.realpath(settings.workdir)) / card.card_id, remote=cfg.remote)


def confined_repo(settings: Settings, raw: str | Path) -> Path:
    """The top level of the repository `raw` names, both inside the allowed roots (ConfigError):
    a `repo` inside a root whose repository encloses the root (`.squad/work`) is refused too."""
    repo = settings.check_allowed(Path(raw), "workspace repo")
    return settings.check_allowed(repo_root(repo), f"the repository of workspace repo {repo}:")


def check_worktree_path(ws: Workspace) -> None:
    """`SQUAD_WORKDIR/<card_id>` is checked like a `workdir` before any use, move or removal: no
    symbolic link at its place, its folder the resolved `SQUAD_WORKDIR` (WorkspaceError)."""
    if ws.path.is_symlink():
        raise WorkspaceError(f"worktree path {ws.path} is a symbolic link: squad will not use, move or remove it")
    if os.path.realpath(ws.path.parent) != str(ws.path.parent):
        raise WorkspaceError(f"worktree path {ws.path}: its folder resolves elsewhere")


def _read_small(path: Path, limit: int = 4096) -> str | None:
    """A small regular file's text (never through a symbolic link), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode("utf-8", errors="replace").strip()
    finally:
        os.close(fd)


def squad_git_dir(path: Path, common: Path | None = None) -> Path | None:
    """The private git dir of a worktree squad created at `path`, or None when `path/.git` is not one.

    A squad worktree's `.git` is a file `gitdir: <common dir>/worktrees/<name>` whose `gitdir` file
    points back at `path/.git`. An agent that rewrites `.git` (a directory of its own, `gitdir:
    <common dir>` to commit on the operator's branch, a repository in its own folder) fails this.
    `common`, when known, is the repository's common git dir; without it, the common dir must lie
    outside `path`'s folder (`SQUAD_WORKDIR`, where agents write).
    """
    text = _read_small(path / ".git")
    if text is None or not text.startswith("gitdir:"):
        return None
    git_dir = Path(os.path.realpath(path / text.removeprefix("gitdir:").strip()))
    if git_dir.parent.name != "worktrees":
        return None
    owner = git_dir.parent.parent
    if common is not None and owner != Path(os.path.realpath(common)):
        return None
    if common is None and (owner == path.parent or owner.is_relative_to(path.parent)):
        return None
    back = _read_small(git_dir / "gitdir")
    if back is None or os.path.realpath(back) != os.path.realpath(path / ".git"):
        return None
    return git_dir


class ForeignGitDir(WorkspaceError):
    """The worktree's `.git` is no longer the one squad created, or it is off the card's branch."""


def check_git_dir(ws: Workspace) -> Path:
    """Before committing or reading facts: the worktree's git dir is the one squad created, on the
    card's branch (WorkspaceError otherwise)."""
    check_worktree_path(ws)
    git_dir = squad_git_dir(ws.path, git_common_dir(ws.repo))
    if git_dir is None:
        raise ForeignGitDir(f"{ws.path}/.git is not the worktree squad created for {ws.card_id}:"
                             " nothing committed or read")
    head = _read_small(git_dir / "HEAD")
    if head != f"ref: refs/heads/{ws.branch}":
        raise ForeignGitDir(f"the worktree of {ws.card_id} is not on its branch {ws.branch}"
                             f" (HEAD {excerpt(head or '?')}): nothing committed or read")
    return git_dir


def land_mode(settings: Settings, card: Card) -> str:
    """The card's own `land`, else `[workspace] land` (`none`, `merge`, `rebase`, `squash`)."""
    return card.land or settings.workspace.land


def lands_when_done(settings: Settings, card: Card) -> bool:
    """Whether a successful attempt goes straight to LANDING: landing on, and `land_when = done` or no
    review gate (`approve` without review is the same as `done`)."""
    if land_mode(settings, card) == "none":
        return False
    when = card.land_when or settings.workspace.land_when
    return when == "done" or not _review_flag(settings, card)


def _review_flag(settings: Settings, card: Card) -> bool:
    return card.review if card.review is not None else settings.workspace.review


def review_enabled(settings: Settings, card: Card) -> bool:
    """The card's own `review`, else `[workspace] review` (skipped when it lands with `land_when = done`)."""
    return _review_flag(settings, card) and not (land_mode(settings, card) != "none"
                                                 and (card.land_when or settings.workspace.land_when) == "done")


# ---- lifecycle ------------------------------------------------------------------------------
def _registered(ws: Workspace) -> bool:
    """True when git knows the worktree at ws.path and it checks out the card's branch."""
    out = git(["worktree", "list", "--porcelain"], ws.repo)
    entries = [block.splitlines() for block in out.strip().split("\n\n") if block.strip()]
    for lines in entries:
        fields = dict(line.split(" ", 1) for line in lines if " " in line)
        if Path(fields.get("worktree", "")).resolve() == ws.path:
            return fields.get("branch") == f"refs/heads/{ws.branch}" and (ws.path / ".git").exists()
    return False


def _move_aside(settings: Settings, ws: Workspace) -> None:
    """A directory at the worktree's place that git does not know: keep its content, out of the way.

    Only an empty folder or a stale worktree of this repository (its `.git` names this repository's
    `worktrees/`) is moved: any other folder (another card's `workdir`, the user's) is left
    untouched and the attempt fails (WorkspaceError).
    """
    check_worktree_path(ws)
    entries = [p for p in ws.path.iterdir() if p.name != ".git"] if ws.path.is_dir() else []
    if not entries:
        shutil.rmtree(ws.path, ignore_errors=True)
        if ws.path.exists() or ws.path.is_symlink():
            ws.path.unlink(missing_ok=True)
        return
    if not _stale_worktree_of(ws):
        raise WorkspaceError(f"{ws.path} exists and is not a worktree squad created for {ws.card_id}:"
                             " left untouched (move it away, or give the card another id)")
    dest = archive_dir(settings, ws.card_id) / f"leftover-{time.strftime('%Y%m%dT%H%M%S')}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(ws.path), str(dest))
    log.warning("moved an unregistered worktree directory aside", card_id=ws.card_id, to=str(dest))


def _stale_worktree_of(ws: Workspace) -> bool:
    """`ws.path/.git` is a file naming a worktree of this repository (git may have pruned it)."""
    text = _read_small(ws.path / ".git")
    if text is None or not text.startswith("gitdir:"):
        return False
    named = Path(os.path.normpath(ws.path / text.removeprefix("gitdir:").strip()))
    return named.parent == Path(os.path.realpath(git_common_dir(ws.repo))) / "worktrees"


def exclude_workdir(settings: Settings, repo: Path) -> None:
    """With `SQUAD_WORKDIR` inside the repository (`repo = "."`), its top folder (`/.squad/`) goes
    into the repository's `.git/info/exclude` — never into the user's `.gitignore`."""
    root = Path(os.path.realpath(repo))
    work = Path(os.path.realpath(settings.workdir))
    if not work.is_relative_to(root) or work == root:
        return
    line = f"/{work.relative_to(root).parts[0]}/"
    exclude = Path(os.path.realpath(git_common_dir(repo))) / "info" / "exclude"
    try:
        current = exclude.read_text(encoding="utf-8") if exclude.is_file() else ""
        if line in current.splitlines():
            return
        exclude.parent.mkdir(parents=True, exist_ok=True)
        with exclude.open("a", encoding="utf-8") as fh:
            fh.write(("" if not current or current.endswith("\n") else "\n") + line + "\n")
    except OSError as exc:
        log.warning("could not add the work folder to .git/info/exclude", repo=str(repo), error=str(exc))


def prepare(settings: Settings, ws: Workspace, depends_on: list[str] | None = None) -> tuple[bool, str]:
    """Create or reuse the card's worktree; (created, base_commit).

    A missing, half-created or unregistered worktree is repaired (prune, then recreated on the
    card's branch, which keeps every earlier attempt's commits). With a `remote`, the card branch is
    first brought up to what the remote holds (a retry on any machine continues the last attempt's
    commits), and a new branch starts from the remote's base. `depends_on` names the branches of the
    card's dependencies to start a new branch from (`land = none`): one is its head, several are
    merged (DependenciesConflict when they do not merge cleanly).
    """
    check_worktree_path(ws)
    exclude_workdir(settings, ws.repo)
    with repo_lock(ws.repo):
        check_worktree_path(ws)
        remote_head = fetch_branch(ws.repo, ws.remote, ws.branch) if ws.remote else None
        if ws.path.is_dir() and _registered(ws):
            _catch_up(ws, remote_head, in_worktree=True)
            return False, branch_base(ws)
        git(["worktree", "prune"], ws.repo)
        if ws.path.exists() or ws.path.is_symlink():
            if _registered(ws):
                _catch_up(ws, remote_head, in_worktree=True)
                return False, branch_base(ws)
            _move_aside(settings, ws)
        ws.path.parent.mkdir(parents=True, exist_ok=True)
        if _ok(["show-ref", "--verify", "--quiet", f"refs/heads/{ws.branch}"], ws.repo):
            _catch_up(ws, remote_head, in_worktree=False)
            git(["worktree", "add", str(ws.path), ws.branch], ws.repo)
            return True, branch_base(ws)
        if remote_head is not None:  # an earlier attempt ran on another machine: continue its commits
            base_commit = git(["merge-base", base_tip(ws), remote_head], ws.repo).strip()
            git(["worktree", "add", "-b", ws.branch, str(ws.path), remote_head], ws.repo)
            git(["config", f"branch.{ws.branch}.{BASE_KEY}", base_commit], ws.repo)
            return True, base_commit
        starts = [dependency_head(ws, branch) for branch in depends_on or []]
        base_commit = starts[0] if starts else base_tip(ws)
        git(["worktree", "add", "-b", ws.branch, str(ws.path), base_commit], ws.repo)
        git(["config", f"branch.{ws.branch}.{BASE_KEY}", base_commit], ws.repo)
        if len(starts) > 1:
            _merge_dependencies(ws, starts[1:], depends_on or [])
        return True, base_commit


def _merge_dependencies(ws: Workspace, heads: list[str], names: list[str]) -> None:
    """Merge the other dependencies' heads into a new card branch; on a conflict nothing stays."""
    try:
        git(["merge", "--no-edit", "--no-verify", "-q", "-m", f"squad: {ws.card_id} starts from {', '.join(names)}",
             *heads], ws.path, env=identity_env(ws.path))
    except WorkspaceError:
        git(["merge", "--abort"], ws.path, check=False)
        git(["worktree", "remove", "--force", "--force", str(ws.path)], ws.repo, check=False)
        git(["branch", "-D", ws.branch], ws.repo, check=False)
        raise DependenciesConflict("dependencies conflict: " + ", ".join(names) + " do not merge cleanly") from None


def dependency_head(ws: Workspace, branch: str) -> str:
    """The newest commit of a dependency's branch: the remote's when it has one, else this clone's."""
    if ws.remote:
        head = fetch_branch(ws.repo, ws.remote, branch)
        if head is not None:
            return head
    try:
        return git(["rev-parse", "--verify", f"refs/heads/{branch}^{{commit}}"], ws.repo).strip()
    except WorkspaceError:
        raise WorkspaceError(f"dependency branch {branch} is not in {ws.repo}"
                             + (f" nor on {ws.remote}" if ws.remote else "")) from None


def base_branch(ws: Workspace) -> str:
    """The branch name of the card's base: `base` when set, else the branch the repository's HEAD names."""
    if ws.base:
        return ws.base.removeprefix("refs/heads/")
    name = git(["symbolic-ref", "--quiet", "--short", "HEAD"], ws.repo, check=False).strip()
    if not name:
        raise ConfigError(f"workspace repo {ws.repo}: HEAD is detached; set [workspace] base")
    return name


def base_tip(ws: Workspace) -> str:
    """The commit a new card branch starts from: the remote's base when there is a remote, else the
    local base (or HEAD)."""
    if ws.remote:
        head = fetch_branch(ws.repo, ws.remote, base_branch(ws))
        if head is None:
            raise ConfigError(f"workspace base {base_branch(ws)!r} is not a branch of remote {ws.remote}")
        return head
    base = ws.base or "HEAD"
    try:
        return git(["rev-parse", "--verify", f"{base}^{{commit}}"], ws.repo).strip()
    except WorkspaceError:
        raise ConfigError(f"workspace base {base!r} is not a commit of {ws.repo}") from None


# ---- the shared remote ----------------------------------------------------------------------
def tracking_ref(remote: str, branch: str) -> str:
    """Where this clone keeps what it last fetched of `branch` from `remote`."""
    return f"refs/remotes/{remote}/{branch}"


def fetch_branch(repo: Path, remote: str | None, branch: str) -> str | None:
    """Fetch one branch of the remote into its tracking ref; its commit, or None when the remote has no
    such branch (the tracking ref is then removed, so a lease expects it absent)."""
    if not remote:
        return None
    ref = tracking_ref(remote, branch)
    listed = git(["ls-remote", "--heads", remote, f"refs/heads/{branch}"], repo).strip()
    if not listed:
        git(["update-ref", "-d", ref], repo, check=False)
        return None
    git(["fetch", "--quiet", "--no-tags", remote, f"+refs/heads/{branch}:{ref}"], repo)
    return git(["rev-parse", "--verify", f"{ref}^{{commit}}"], repo).strip()


def push_branch(repo: Path, remote: str, branch: str, commit: str | None = None, *,
                target: str | None = None) -> None:
    """Push `commit` (default: the local branch) to the remote's `target` branch (default: `branch`),
    with a lease on what this clone last fetched of it: another machine's newer push is never lost."""
    target = target or branch
    source = commit or f"refs/heads/{branch}"
    expected = git(["rev-parse", "--verify", "--quiet", tracking_ref(remote, target)], repo, check=False).strip()
    git(["push", "--quiet", "--no-verify", f"--force-with-lease=refs/heads/{target}:{expected}",
         remote, f"{source}:refs/heads/{target}"], repo)
    pushed = git(["rev-parse", "--verify", f"{source}^{{commit}}"], repo).strip()
    git(["update-ref", tracking_ref(remote, target), pushed], repo)


def delete_remote_branch(repo: Path, remote: str, branch: str) -> None:
    """Delete a card branch on the remote (`delete_landed_branch`)."""
    git(["push", "--quiet", "--no-verify", remote, f":refs/heads/{branch}"], repo)
    git(["update-ref", "-d", tracking_ref(remote, branch)], repo, check=False)


def is_ancestor(repo: Path, older: str, newer: str) -> bool:
    """Whether `older` is `newer` or one of its ancestors."""
    return _ok(["merge-base", "--is-ancestor", older, newer], repo)


def _catch_up(ws: Workspace, remote_head: str | None, *, in_worktree: bool) -> None:
    """Bring the local card branch forward to the remote's when the remote is ahead (another machine
    ran the last attempt); a local branch with commits the remote lacks is kept as it is."""
    if remote_head is None:
        return
    local = git(["rev-parse", f"refs/heads/{ws.branch}"], ws.repo).strip()
    if local == remote_head or not is_ancestor(ws.repo, local, remote_head):
        return
    if in_worktree:
        git(["merge", "--ff-only", "-q", remote_head], ws.path)
    else:
        git(["update-ref", f"refs/heads/{ws.branch}", remote_head, local], ws.repo)
    log.info("card branch brought up to the remote's", card_id=ws.card_id, branch=ws.branch, head=remote_head)


def merge_base_into(ws: Workspace, base_commit: str) -> list[str]:
    """Merge `base_commit` into the card branch in its worktree; the conflicted files, whose conflict
    markers stay for the next attempt ([] when it merged cleanly, committed)."""
    if _ok(["rev-parse", "-q", "--verify", "MERGE_HEAD"], ws.path):
        return conflicted_files(ws.path)
    try:
        git(["merge", "--no-edit", "--no-verify", "-q", "-m", f"squad: {ws.card_id} merges its base", base_commit],
            ws.path, env=identity_env(ws.path))
        return []
    except WorkspaceError:
        files = conflicted_files(ws.path)
        if not files:
            raise
        return files


def conflicted_files(path: Path) -> list[str]:
    """Files git holds as unmerged in a worktree."""
    out = git(["diff", "--name-only", "--diff-filter=U", "-z"], path)
    return sorted({name for name in out.split("\0") if name})


_MARKER_RE = r"^(<<<<<<<|>>>>>>>)( |$)"


def files_with_markers(path: Path, files: list[str]) -> list[str]:
    """Of `files`, those that still hold a conflict marker line in the worktree."""
    present = [f for f in files if (path / f).is_file()]
    if not present:
        return []
    out = git(["grep", "--no-index", "-l", "-E", _MARKER_RE, "--", *present], path, check=False)
    return sorted(line for line in out.splitlines() if line)


def branch_base(ws: Workspace) -> str:
    """The commit the card's branch was created from (recorded in the branch's config)."""
    recorded = git(["config", "--get", f"branch.{ws.branch}.{BASE_KEY}"], ws.repo, check=False).strip()
    if recorded:
        return recorded
    base = ws.base or "HEAD"
    return git(["merge-base", base, ws.branch], ws.repo).strip()


def is_dirty(path: Path) -> bool:
    """Uncommitted changes, untracked files included."""
    return bool(git(["status", "--porcelain", "--untracked-files=all"], path).strip())


def identity_env(path: Path) -> dict[str, str]:
    """A committer identity only when the repository has none (never overrides the user's)."""
    if git(["config", "--get", "user.email"], path, check=False).strip():
        return {}
    name, email = SQUAD_COMMITTER
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}


def commit_all(ws: Workspace, message: str) -> bool:
    """Commit whatever the agent left uncommitted on the card branch (a merge in progress is concluded);
    False when clean. Refused (WorkspaceError) when the worktree is no longer the one squad created."""
    check_git_dir(ws)
    if not is_dirty(ws.path) and not _ok(["rev-parse", "-q", "--verify", "MERGE_HEAD"], ws.path):
        return False
    git(["add", "-A"], ws.path)
    # --no-verify: a checkpoint of the agent's work must not be refused by the repository's hooks
    git(["commit", "--no-verify", "--quiet", "-m", message], ws.path, env=identity_env(ws.path))
    return True


def facts(ws: Workspace, base_commit: str) -> GitFacts:
    """Branch, base and head commits and the diff size of the card's branch so far."""
    check_git_dir(ws)
    head = git(["rev-parse", "HEAD"], ws.path).strip()
    files = numstat(ws.repo, base_commit, head)
    return GitFacts(branch=ws.branch, base_commit=base_commit, head_commit=head, files_changed=len(files),
                    insertions=sum(f.insertions for f in files), deletions=sum(f.deletions for f in files))


def numstat(repo: Path, base: str, head: str) -> list[FileStat]:
    """Per-file insertions and deletions of `base…head` (binary files count 0)."""
    out = git(["diff", "--numstat", "-z", "--no-renames", f"{base}...{head}"], repo)
    stats: list[FileStat] = []
    for record in out.split("\0"):
        if not record.strip():
            continue
        parts = record.split("\t", 2)
        if len(parts) != 3:
            continue
        ins, dels, path = parts
        stats.append(FileStat(path=path, insertions=int(ins) if ins.isdigit() else 0,
                              deletions=int(dels) if dels.isdigit() else 0))
    return stats


def uncommitted_patch(path: Path) -> str:
    """Every uncommitted change (untracked files too) as a binary patch, without touching the index."""
    with tempfile.TemporaryDirectory(prefix="squad-index-") as tmp:
        index = str(Path(tmp) / "index")
        env = {"GIT_INDEX_FILE": index}
        git(["read-tree", "HEAD"], path, env=env)
        git(["add", "-A"], path, env=env)
        return git(["diff", "--cached", "--binary", "HEAD"], path, env=env)


def archive_dir(settings: Settings, card_id: str) -> Path:
    """Where patches and leftovers of a card are kept on disk (`SQUAD_WORKDIR/.archive/<card_id>`)."""
    return (settings.workdir / ARCHIVE_DIR / card_id).resolve()


def remove(settings: Settings, ws: Workspace, save_patch: PatchSink | None,
           guard: Callable[[], bool] | None = None) -> tuple[bool, str | None]:
    """Remove the worktree, keep the branch; uncommitted work is saved first.

    `guard` is asked under the repository lock (e.g. "is the card still not running?"): a worker
    that claims the card meanwhile waits for the lock in `prepare` and recreates the worktree.
    Returns (removed, patch file or None).
    """
    saved: str | None = None
    check_worktree_path(ws)
    with repo_lock(ws.repo):
        if guard is not None and not guard():
            return False, None
        check_worktree_path(ws)
        owned = squad_git_dir(ws.path, git_common_dir(ws.repo)) is not None if ws.path.is_dir() else False
        if owned and _registered(ws):
            if is_dirty(ws.path):
                patch = uncommitted_patch(ws.path)
                dest = archive_dir(settings, ws.card_id) / f"uncommitted-{time.strftime('%Y%m%dT%H%M%S')}.patch"
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(patch, encoding="utf-8")
                saved = str(dest)
                if save_patch is not None:
                    save_patch(ws.card_id, patch)
            git(["worktree", "remove", "--force", "--force", str(ws.path)], ws.repo)
        elif ws.path.exists():
            _move_aside(settings, ws)
        git(["worktree", "prune"], ws.repo)
    log.info("worktree removed, branch kept", card_id=ws.card_id, branch=ws.branch, patch=saved)
    return True, saved


def should_remove(settings: Settings, status: Status | str | None) -> bool:
    """Cleanup policy at the end of an attempt: DONE/CANCELLED always go, failures follow `keep`."""
    keep = settings.workspace.keep
    if keep == "always" or status is None:
        return False
    if status in (Status.DONE, Status.CANCELLED):
        return True
    return status == Status.FAILED and keep == "never"


# ---- list and gc ----------------------------------------------------------------------------
def _size(path: Path) -> int:
    total = 0
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        else:
                            total += entry.stat(follow_symlinks=False).st_blocks * 512
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def _age_s(path: Path, now: float) -> float:
    stamps = []
    for candidate in (path, path / ".git"):
        try:
            stamps.append(candidate.stat().st_mtime)
        except OSError:
            continue
    return max(0.0, now - max(stamps)) if stamps else 0.0


def _worktree_dirs(settings: Settings) -> list[tuple[Path, Path]]:
    """(folder, its git dir) of each worktree squad created under SQUAD_WORKDIR: no link, a `.git`
    naming a worktree of a repository inside the allowed roots that points back (`squad_git_dir`);
    git never runs in any other folder there (a plain card's agent may write its own `.git`)."""
    root = Path(os.path.realpath(settings.workdir))
    if not root.is_dir():
        return []
    roots = settings.allowed_root_paths()
    found: list[tuple[Path, Path]] = []
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") or p.is_symlink() or not p.is_dir():
            continue
        git_dir = squad_git_dir(p)
        if git_dir is None:
            continue
        owner = git_dir.parent.parent
        if any(owner == r or owner.is_relative_to(r) for r in roots):
            found.append((p, git_dir))
    return found


def _head_branch(git_dir: Path) -> str | None:
    head = _read_small(git_dir / "HEAD") or ""
    return head.removeprefix("ref: refs/heads/") if head.startswith("ref: refs/heads/") else None


def list_workspaces(settings: Settings, statuses: dict[str, str] | None = None, *,
                    with_size: bool = True) -> list[WorkspaceInfo]:
    """Every card worktree under SQUAD_WORKDIR with its branch, size on disk, age and dirtiness."""
    now = time.time()
    infos: list[WorkspaceInfo] = []
    for path, git_dir in _worktree_dirs(settings):
        branch = _head_branch(git_dir)
        try:
            dirty = is_dirty(path)
        except WorkspaceError:
            dirty = False
        infos.append(WorkspaceInfo(card_id=path.name, branch=branch, path=str(path),
                                   size_bytes=_size(path) if with_size else 0, age_s=round(_age_s(path, now), 1),
                                   dirty=dirty, status=(statuses or {}).get(path.name)))
    return infos


_usage_cache: dict[str, tuple[float, int]] = {}


def disk_usage_bytes(settings: Settings, max_age_s: float = DISK_USAGE_CACHE_S) -> int:
    """Bytes on disk of every card worktree (API and /metrics); walked at most every `max_age_s`."""
    key = str(settings.workdir.resolve())
    cached = _usage_cache.get(key)
    now = time.monotonic()
    if cached is not None and now - cached[0] < max_age_s:
        return cached[1]
    total = sum(_size(p) for p, _git_dir in _worktree_dirs(settings))
    _usage_cache[key] = (now, total)
    return total


def _workspace_of_dir(settings: Settings, path: Path, git_dir: Path, card: Card | None) -> Workspace | None:
    common = git_dir.parent.parent
    root = common.parent if common.name == ".git" else common
    if not root.is_dir():
        return None
    return Workspace(card_id=path.name, repo=root, base=card.base if card else None,
                     branch=_head_branch(git_dir) or f"{settings.workspace.branch_prefix}{path.name}", path=path)


def gc(settings: Settings, cards: dict[str, Card], save_patch: PatchSink | None,
       older_than_days: float | None = None, status_now: Callable[[str], str | None] | None = None) -> list[str]:
    """Remove what the policy allows; never the worktree of a running card.

    DONE/CANCELLED cards' worktrees go (unless `keep = "always"`), a FAILED one goes with
    `keep = "never"`; anything else (and everything with `keep = "always"`) once it is older than
    `older_than_days` (default `ttl_days`). Uncommitted work is saved as a patch first.
    `status_now` re-reads a card's status under the repository lock, just before removing.
    """
    ttl_s = (older_than_days if older_than_days is not None else settings.workspace.ttl_days) * DAY_S
    now = time.time()
    removed: list[str] = []
    for path, git_dir in _worktree_dirs(settings):
        card = cards.get(path.name)
        status = card.status if card else None
        if status == Status.IN_PROGRESS:
            continue
        expired = _age_s(path, now) >= ttl_s
        if not (expired or (card is not None and should_remove(settings, status))):
            continue
        ws = _workspace_of_dir(settings, path, git_dir, card)
        if ws is None:
            continue
        def not_running(card_id: str = path.name) -> bool:
            return status_now is None or status_now(card_id) != Status.IN_PROGRESS

        try:
            if remove(settings, ws, save_patch, guard=not_running)[0]:
                removed.append(path.name)
        except SquadError as exc:
            log.warning("gc could not remove a worktree", card_id=path.name, error=str(exc))
    return removed


__all__ = [
    "DependenciesConflict", "FileStat", "Workspace", "WorkspaceError", "WorkspaceInfo", "base_branch",
    "base_tip", "commit_all", "conflicted_files", "delete_remote_branch", "dependency_head",
    "disk_usage_bytes", "facts", "fetch_branch", "files_with_markers", "gc", "git", "identity_env",
    "is_ancestor", "land_mode", "lands_when_done", "list_workspaces", "merge_base_into", "numstat", "prepare",
    "push_branch", "remove", "repo_lock", "review_enabled", "should_remove", "tracking_ref", "workspace_for",
]
