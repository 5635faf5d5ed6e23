"""Squad's own git never runs what a repository supplies, and never with our secrets (issue 21 item 2).

Real git repositories into which the tests plant what a hostile agent can write: `core.fsmonitor`,
hooks, clean/smudge filters, textconv, `diff.external`, diff and merge drivers, `uploadpack`. A
planted program records that it ran (and its environment) in a marks folder; the tests check that
nothing ran, through `run_git` and through squad's own commands.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from squad.attempt.gitcmd import WorkspaceError, git_environment, repo_overrides, run_git
from support.repos import make_repo

TOKEN = "tok-7f3a9c1e-secret"


def leak_script(folder: Path, marks: Path, name: str = "leak.sh", then: str = "cat") -> Path:
    """A program that records its run and environment in `marks`, then behaves like `cat` (or `then`)."""
    folder.mkdir(parents=True, exist_ok=True)
    marks.mkdir(parents=True, exist_ok=True)
    script = folder / name
    script.write_text(f"#!/bin/sh\nenv > '{marks}/ran-$$.env'\n{then}\nexit 0\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


def plant(repo: Path, leak: Path) -> None:
    """Everything an agent can write into a repository (config, hooks, attributes) to make git run `leak`."""
    for key, value in (("core.fsmonitor", str(leak)), ("diff.external", str(leak)),
                       ("filter.evil.clean", str(leak)), ("filter.evil.smudge", str(leak)),
                       ("filter.evil.required", "true"), ("diff.evil.textconv", str(leak)),
                       ("diff.evil.command", str(leak)), ("merge.evil.driver", str(leak)),
                       ("core.sshCommand", str(leak)), ("credential.helper", f"!{leak}"),
                       ("core.pager", str(leak)), ("gpg.program", str(leak)), ("commit.gpgSign", "true")):
        run_git(["config", key, value], repo)
    hooks = Path(run_git(["rev-parse", "--path-format=absolute", "--git-common-dir"], repo).strip()) / "hooks"
    hooks.mkdir(exist_ok=True)
    for hook in ("pre-commit", "post-commit", "post-checkout", "commit-msg", "reference-transaction",
                 "post-index-change", "pre-auto-gc"):
        (hooks / hook).write_text(f"#!/bin/sh\nexec '{leak}' </dev/null\n", encoding="utf-8")
        (hooks / hook).chmod(0o755)
    (repo / ".gitattributes").write_text("* filter=evil diff=evil merge=evil\n", encoding="utf-8")


def ran(marks: Path) -> list[str]:
    return sorted(p.read_text(encoding="utf-8") for p in marks.glob("ran-*.env"))


@pytest.fixture
def hostile_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setenv("SQUAD_API_TOKEN", TOKEN)
    repo = tmp_path / "repo"
    make_repo(repo)
    marks = tmp_path / "marks"
    plant(repo, leak_script(tmp_path / "bin", marks))
    return repo, marks


def test_status_add_commit_diff_and_worktree_add_run_nothing_the_repository_planted(
        hostile_repo: tuple[Path, Path], tmp_path: Path) -> None:
    repo, marks = hostile_repo
    (repo / "README.md").write_text("hello\nchanged\n", encoding="utf-8")
    (repo / "new.txt").write_text("new\n", encoding="utf-8")
    assert run_git(["status", "--porcelain", "--untracked-files=all"], repo).strip()
    run_git(["add", "-A"], repo)
    run_git(["commit", "--quiet", "-m", "agent work"], repo)
    patch = run_git(["diff", "HEAD~1", "HEAD"], repo)
    assert "+changed" in patch and "+new" in patch  # the real diff, not a textconv or external one
    assert run_git(["diff", "--numstat", "HEAD~1...HEAD"], repo).strip()
    assert run_git(["show", "HEAD:new.txt"], repo) == "new\n"
    run_git(["log", "-p", "-1"], repo)
    run_git(["worktree", "add", "-b", "card", str(tmp_path / "wt"), "HEAD"], repo)
    assert (tmp_path / "wt" / "new.txt").read_text(encoding="utf-8") == "new\n"  # no smudge filter ran
    run_git(["status", "--porcelain"], tmp_path / "wt")
    run_git(["worktree", "remove", "--force", str(tmp_path / "wt")], repo)
    assert ran(marks) == []


def test_a_merge_driver_planted_by_the_repository_never_runs_the_merge_conflicts_instead(
        hostile_repo: tuple[Path, Path]) -> None:
    repo, marks = hostile_repo
    run_git(["add", "-A"], repo)
    run_git(["commit", "-q", "-m", "attributes"], repo)
    run_git(["checkout", "-q", "-b", "side"], repo)
    (repo / "README.md").write_text("side\n", encoding="utf-8")
    run_git(["commit", "-q", "-am", "side"], repo)
    run_git(["checkout", "-q", "main"], repo)
    (repo / "README.md").write_text("main\n", encoding="utf-8")
    run_git(["commit", "-q", "-am", "main"], repo)
    run_git(["merge", "--no-edit", "side"], repo, check=False)
    assert ran(marks) == []
    run_git(["merge", "--abort"], repo, check=False)


def test_a_local_remote_with_a_planted_upload_pack_is_refused_never_run(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    leak = leak_script(tmp_path / "bin", marks)
    origin = tmp_path / "origin"
    make_repo(origin)
    repo = tmp_path / "repo"
    make_repo(repo)
    run_git(["remote", "add", "origin", str(origin)], repo)
    assert "refs/heads/main" in run_git(["ls-remote", "origin"], repo, timeout=30)
    run_git(["config", "remote.origin.uploadpack", str(leak)], repo)
    with pytest.raises(WorkspaceError, match=r"remote\.origin\.uploadpack"):
        run_git(["ls-remote", "origin"], repo, timeout=30)
    assert ran(marks) == []


def test_programs_the_operator_configured_run_without_squads_secrets(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's own global `core.sshCommand` is kept, but it gets the scrubbed environment."""
    marks = tmp_path / "marks"
    leak = leak_script(tmp_path / "bin", marks, then="exit 1")
    glob = tmp_path / "global.gitconfig"
    glob.write_text(f"[core]\n\tsshCommand = {leak}\n", encoding="utf-8")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(glob))
    monkeypatch.setenv("SQUAD_API_TOKEN", TOKEN)
    monkeypatch.setenv("SQUAD_DATABASE_URL", "postgresql://squad:pg-pass-91@db/squad")
    monkeypatch.setenv("CELERY_RESULT_COPY", "postgresql://x:pg-pass-91@db/y")
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    repo = tmp_path / "repo"
    make_repo(repo)
    run_git(["ls-remote", "ssh://example.invalid/x.git"], repo, check=False, timeout=30,
            secrets=["extra-secret-value"])
    envs = ran(marks)
    assert envs, "the operator's ssh command should have run"
    for text in envs:
        assert TOKEN not in text and "pg-pass-91" not in text and "SQUAD_API_TOKEN" not in text
        assert "GIT_DIR=" not in text


def test_the_environment_drops_our_variables_and_secrets_and_keeps_the_rest() -> None:
    base = {"PATH": "/usr/bin", "HOME": "/home/u", "SQUAD_API_TOKEN": TOKEN, "USE_CELERY": "true",
            "SQUAD_REDIS_URL": "redis://:redis-pw-1@h:6379/0", "COPY": "x redis-pw-1 y", "GIT_DIR": "/x",
            "GIT_INDEX_FILE": "/i", "GIT_CONFIG_PARAMETERS": "'core.fsmonitor'='x'", "GIT_AUTHOR_NAME": "Op",
            "GIT_SSH_COMMAND": "ssh -i k", "OTHER": "toml-secret-1234"}
    env = git_environment({"GIT_INDEX_FILE": "/tmp/idx"}, ["toml-secret-1234"], base=base)
    assert env["PATH"] == "/usr/bin" and env["HOME"] == "/home/u"
    assert env["GIT_AUTHOR_NAME"] == "Op" and env["GIT_SSH_COMMAND"] == "ssh -i k"
    assert env["GIT_INDEX_FILE"] == "/tmp/idx" and env["GIT_TERMINAL_PROMPT"] == "0"
    for gone in ("SQUAD_API_TOKEN", "USE_CELERY", "SQUAD_REDIS_URL", "COPY", "GIT_DIR", "GIT_CONFIG_PARAMETERS",
                 "OTHER"):
        assert gone not in env, gone


def test_repository_programs_are_replaced_by_the_operators_or_inert_ones() -> None:
    records = [("system", "credential.helper", "store"), ("global", "core.sshcommand", "ssh -i op"),
               ("local", "credential.helper", "!evil"), ("local", "core.sshcommand", "evil"),
               ("worktree", "filter.Lfs.clean", "evil"), ("local", "merge.m.driver", "evil"),
               ("local", "user.name", "fine")]
    assert repo_overrides(records) == [
        "credential.helper=", "credential.helper=store", "core.sshcommand=ssh -i op", "filter.Lfs.clean=",
        "filter.Lfs.required=false", "merge.m.driver=false"]
    assert repo_overrides([("global", "filter.lfs.clean", "git-lfs clean -- %f")]) == []

