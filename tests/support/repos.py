"""Real git repositories for the workspace tests (agents work in worktrees of them)."""

from __future__ import annotations

from pathlib import Path


def make_repo(path: Path) -> str:
    """A git repository with one commit on main; returns that commit."""
    from squad.attempt.workspaces import git

    path.mkdir(parents=True)
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "dev@example.com"],
                 ["config", "user.name", "Dev"]):
        git(args, path)
    (path / "README.md").write_text("hello\n", encoding="utf-8")
    git(["add", "-A"], path)
    git(["commit", "-q", "-m", "initial"], path)
    return git(["rev-parse", "HEAD"], path).strip()
