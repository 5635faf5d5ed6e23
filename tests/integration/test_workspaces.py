"""Workspaces and the review gate with real git repositories made here, real `squad` subprocesses
(local-mode orchestrator, supervised Celery workers) and a fake agent that edits files
(tests/agents/git_worker.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from squad.attempt.workspaces import Workspace, WorkspaceError, gc, git, list_workspaces, prepare, workspace_for
from squad.core.cards import CardSpec
from squad.core.settings import load_settings
from squad.core.statuses import Status
from squad.store.card_store import CardStore
from support.cli import run_cli, squad_env
from support.fake_agents import sandbox_toml
from support.paths import AGENTS
from support.processes import free_port, kill_tree, wait_for
from support.repos import make_repo
from support.workers import Worker

PY = sys.executable


class Repo:
    """A project directory with a git repository, squad.toml pointing at it, and a local store."""

    def __init__(self, root: Path, workspace_toml: str = "", agent_args: str = "") -> None:
        self.root = root
        self.repo = root / "repo"
        self.initial = make_repo(self.repo)
        self.marks = root / "marks"
        self.marks.mkdir()
        self.work = root / "work"
        self.db_url = f"sqlite:///{root / '.squad' / 'squad.db'}"
        args = ", ".join(f'"{a}"' for a in agent_args.split()) if agent_args else ""
        (root / "squad.toml").write_text(f"""
default_agent = "git"
{sandbox_toml(self.marks)}[agents.git]
command = ["{PY}", "{AGENTS / 'git_worker.py'}", "{self.marks}"{", " + args if args else ""}]
[workspace]
repo = "{self.repo}"
{workspace_toml}
""", encoding="utf-8")
        self.env = squad_env(USE_CELERY="false", SQUAD_REDIS_URL=f"redis://127.0.0.1:{free_port()}",
                             SQUAD_DATABASE_URL=self.db_url, SQUAD_MAX_RETRIES="0", SQUAD_RETRY_BACKOFF="0.3",
                             SQUAD_ALLOWED_ROOTS=str(root), SQUAD_WORKDIR=str(self.work))
        self.store = CardStore(self.db_url)

    def seed(self, *cards: dict[str, Any]) -> None:
        self.store.add_cards([CardSpec(**{"title": f"title of {c['card_id']}", **c}) for c in cards])

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=self.env)

    def orchestrate(self) -> subprocess.CompletedProcess[str]:
        return self.cli("orchestrate", "--mode", "local", "--once", "--wait", "--interval", "0.2")

    def start_orchestrator(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([PY, "-m", "squad", "orchestrate", "--mode", "local", "--wait", "--interval", "0.2"],
                                env=self.env, stdout=subprocess.DEVNULL, stderr=open(self.root / "orch.log", "wb"),
                                start_new_session=True)

    def mark(self, card_id: str, attempt: int) -> dict[str, Any]:
        return dict(json.loads((self.marks / f"{card_id}-{attempt}.json").read_text()))

    def show(self, ref: str, path: str) -> str:
        return git(["show", f"{ref}:{path}"], self.repo)

    def main_untouched(self) -> None:
        assert git(["status", "--porcelain", "--untracked-files=all"], self.repo) == ""
        assert git(["rev-parse", "HEAD"], self.repo).strip() == self.initial
        assert git(["rev-parse", "--abbrev-ref", "HEAD"], self.repo).strip() == "main"

    def status(self, card_id: str) -> Status:
        return self.store.get_card(card_id).status


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Repo]:
    p = Repo(tmp_path)
    yield p
    p.store.dispose()


def _repo(tmp_path: Path, **kw: str) -> Repo:
    return Repo(tmp_path, **kw)


# ---- one card in its worktree ------------------------------------------------------------------
def test_a_card_runs_in_its_own_worktree_commits_its_work_and_done_removes_the_worktree_keeps_the_branch(
        project: Repo) -> None:
    project.seed({"card_id": "A"})
    proc = project.orchestrate()
    assert proc.returncode == 0, proc.stderr
    assert project.status("A") == Status.DONE
    assert project.mark("A", 1)["cwd"] == str((project.work / "A").resolve())
    # the branch keeps the agent's work, committed by squad; the worktree is gone; main untouched
    assert project.show("squad/A", "A.txt") == "attempt 1\n"
    assert "squad: A attempt 1" in git(["log", "--format=%s", "squad/A"], project.repo)
    assert not (project.work / "A").exists()
    project.main_untouched()
    run = project.store.list_runs("A")[0]
    assert (run.branch, run.base_commit) == ("squad/A", project.initial)
    assert run.head_commit == git(["rev-parse", "squad/A"], project.repo).strip()
    assert (run.files_changed, run.insertions, run.deletions) == (2, 1 + len(project.show("squad/A", "PROMPT_1.md")
                                                                             .splitlines()), 0)


def test_a_repository_outside_the_allowed_roots_fails_the_attempt_with_a_clear_error(project: Repo) -> None:
    project.env["SQUAD_ALLOWED_ROOTS"] = str(project.work)
    project.seed({"card_id": "A"})
    project.orchestrate()
    card = project.store.get_card("A")
    assert card.status == Status.FAILED
    assert "outside the allowed roots" in (card.last_error or "")
    project.main_untouched()


# ---- review gate -------------------------------------------------------------------------------
def test_review_reject_reuses_the_worktree_with_feedback_then_approve_releases_dependants(tmp_path: Path) -> None:
    project = _repo(tmp_path, workspace_toml="review = true")
    project.seed({"card_id": "A"}, {"card_id": "B", "depends_on": ["A"], "review": False})
    orch = project.start_orchestrator()
    try:
        wait_for(lambda: project.status("A") == Status.REVIEW, 90, message="A in REVIEW")
        time.sleep(1.0)  # a few orchestrator passes: B must keep waiting behind a card in REVIEW
        assert project.status("B") == Status.TODO
        listed = json.loads(project.cli("review", "list", "--json").stdout)
        assert [(c["card_id"], c["branch"], c["files_changed"]) for c in listed] == [("A", "squad/A", 2)]
        stat = project.cli("review", "show", "A", "--stat")
        assert stat.returncode == 0 and "A.txt | +1 -0" in stat.stdout and "+attempt 1" not in stat.stdout
        assert "+attempt 1" in project.cli("review", "show", "A").stdout
        # approving or rejecting a card that is not in REVIEW: one line, exit 2
        bad = project.cli("review", "approve", "B")
        assert bad.returncode == 2 and "not REVIEW" in bad.stderr and "Traceback" not in bad.stderr

        rej = project.cli("review", "reject", "A", "--feedback", "Please also handle the EMPTY case")
        assert rej.returncode == 0, rej.stderr
        wait_for(lambda: len(project.store.list_runs("A")) == 2 and project.status("A") == Status.REVIEW, 90,
                 message="second attempt back in REVIEW")
        second = project.mark("A", 2)
        assert second["cwd"] == project.mark("A", 1)["cwd"]  # same worktree
        assert second["had_file"]  # the agent continued its own work
        prompt = project.show("squad/A", "PROMPT_2.md")
        assert "Please also handle the EMPTY case" in prompt.split("# title of A")[0]  # before the task
        assert project.show("squad/A", "A.txt") == "attempt 1\nattempt 2\n"
        assert project.status("B") == Status.TODO

        ok = project.cli("review", "approve", "A")
        assert ok.returncode == 0, ok.stderr
        assert project.status("A") == Status.DONE
        assert orch.wait(timeout=120) == 0
    finally:
        kill_tree(orch)
    assert project.status("B") == Status.DONE
    assert not (project.work / "A").exists() and not (project.work / "B").exists()
    assert git(["log", "--format=%s", "squad/A"], project.repo).split("\n")[:2] == [
        "squad: A attempt 2", "squad: A attempt 1"]
    project.main_untouched()


def test_a_failing_after_approve_hook_keeps_the_card_in_review_with_the_error(tmp_path: Path) -> None:
    project = _repo(tmp_path, workspace_toml=f'review = true\nafter_approve = ["{PY}", "-c", '
                                             '"import sys; sys.exit(\'cannot push {branch}\')"]')
    project.seed({"card_id": "A"})
    assert project.orchestrate().returncode == 0
    assert project.status("A") == Status.REVIEW
    proc = project.cli("review", "approve", "A")
    assert proc.returncode == 1 and "after_approve exited with 1: cannot push squad/A" in proc.stderr
    card = project.store.get_card("A")
    assert card.status == Status.REVIEW and "cannot push squad/A" in (card.last_error or "")


# ---- retries and cleanup -----------------------------------------------------------------------
def test_a_retry_reuses_the_worktree_and_a_failed_card_keeps_it_on_failure(tmp_path: Path) -> None:
    project = _repo(tmp_path, agent_args="--fail-first")
    project.env["SQUAD_MAX_RETRIES"] = "1"
    project.seed({"card_id": "A"}, {"card_id": "F", "max_retries": 0})
    assert project.orchestrate().returncode == 1  # F failed
    assert project.status("A") == Status.DONE
    assert project.mark("A", 2)["had_file"] and project.mark("A", 2)["cwd"] == project.mark("A", 1)["cwd"]
    assert [r.head_commit is not None for r in project.store.list_runs("A")] == [True, True]
    assert project.show("squad/A", "A.txt") == "attempt 1\nattempt 2\n"
    # keep = "on_failure": the failed card's worktree stays for a look, committed
    assert project.status("F") == Status.FAILED
    assert (project.work / "F" / "F.txt").read_text() == "attempt 1\n"
    assert not (project.work / "A").exists()
    project.main_untouched()


def test_uncommitted_work_is_saved_as_a_patch_before_the_worktree_is_removed(tmp_path: Path) -> None:
    project = _repo(tmp_path, workspace_toml="auto_commit = false")
    project.seed({"card_id": "A"})
    assert project.orchestrate().returncode == 0
    assert not (project.work / "A").exists()
    run = project.store.list_runs("A")[0]
    patch = project.store.run_patch(run.id)
    assert "+++ b/A.txt" in patch and "+attempt 1" in patch
    files = list((project.work / ".archive" / "A").glob("uncommitted-*.patch"))
    assert len(files) == 1 and files[0].read_text() == patch
    # the patch applies on the kept branch and gives back the work
    check = project.root / "check"
    git(["worktree", "add", "-q", str(check), "squad/A"], project.repo)
    git(["apply", str(files[0])], check)
    assert (check / "A.txt").read_text() == "attempt 1\n"


# ---- repair and gc (real git, no agent) ----------------------------------------------------------
def _workspace(project: Repo, card_id: str) -> tuple[Any, Workspace]:
    settings = load_settings(workdir=project.work, allowed_roots=str(project.root), workspace={"repo": project.repo})
    card = project.store.get_card(card_id)
    ws = workspace_for(settings, card)
    assert ws is not None
    return settings, ws


def test_a_deleted_or_half_created_worktree_is_repaired_on_the_card_branch(project: Repo) -> None:
    project.seed({"card_id": "A"})
    settings, ws = _workspace(project, "A")
    assert prepare(settings, ws) == (True, project.initial)
    (ws.path / "work.txt").write_text("x\n")
    git(["add", "-A"], ws.path)
    git(["commit", "-q", "-m", "agent work"], ws.path)
    assert prepare(settings, ws)[0] is False  # reused
    shutil.rmtree(ws.path)  # deleted behind git's back
    assert prepare(settings, ws) == (True, project.initial)
    assert (ws.path / "work.txt").read_text() == "x\n"  # the branch's work is back
    # a stale worktree of this repository (git pruned it) with content is moved aside, not lost
    git(["worktree", "remove", "--force", str(ws.path)], project.repo)
    ws.path.mkdir()
    (ws.path / "stray.txt").write_text("keep me\n")
    (ws.path / ".git").write_text(f"gitdir: {project.repo / '.git' / 'worktrees' / 'A'}\n")
    assert prepare(settings, ws)[0] is True
    assert (ws.path / ".git").is_file()
    assert [p.read_text() for p in (project.work / ".archive" / "A").glob("leftover-*/stray.txt")] == ["keep me\n"]
    # any other folder at its place (not a worktree of this repository) is left untouched: refused
    git(["worktree", "remove", "--force", str(ws.path)], project.repo)
    ws.path.mkdir()
    (ws.path / "mine.txt").write_text("user's\n")
    with pytest.raises(WorkspaceError, match="left untouched"):
        prepare(settings, ws)
    assert (ws.path / "mine.txt").read_text() == "user's\n"
    project.main_untouched()


def test_gc_respects_the_ttl_and_never_removes_a_running_cards_worktree(project: Repo) -> None:
    ids = ["OLD", "YOUNG", "RUNNING", "FINISHED"]
    project.seed(*({"card_id": c} for c in ids))
    for cid in ids:
        settings, ws = _workspace(project, cid)
        prepare(settings, ws)
    (project.work / "OLD" / "notes.txt").write_text("unsaved\n")
    project.store.transition("RUNNING", Status.QUEUED, expected=[Status.TODO], celery_task_id="t1")
    assert project.store.claim("RUNNING", "t1", "w", 300) is not None
    project.store.transition("FINISHED", Status.CANCELLED, expected=[Status.TODO])
    ten_days_ago = time.time() - 10 * 86_400
    for cid in ("OLD", "RUNNING"):
        for p in (project.work / cid, project.work / cid / ".git"):
            os.utime(p, (ten_days_ago, ten_days_ago))
    listed = json.loads(project.cli("workspace", "list", "--json").stdout)
    assert {(w["card_id"], w["branch"], w["dirty"], w["status"]) for w in listed} == {
        ("OLD", "squad/OLD", True, "TODO"), ("YOUNG", "squad/YOUNG", False, "TODO"),
        ("RUNNING", "squad/RUNNING", False, "IN_PROGRESS"), ("FINISHED", "squad/FINISHED", False, "CANCELLED")}
    assert all(w["size_bytes"] > 0 and w["age_s"] >= 0 for w in listed)
    proc = project.cli("workspace", "gc")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in project.work.iterdir() if not p.name.startswith(".")) == ["RUNNING", "YOUNG"]
    assert "+unsaved" in (next((project.work / ".archive" / "OLD").glob("*.patch")).read_text())
    # every branch is kept
    assert all(git(["rev-parse", "--verify", f"squad/{c}"], project.repo) for c in ids)
    # --older-than 0: everything idle goes, still never the running card's
    settings, _ws = _workspace(project, "YOUNG")
    cards = project.store.get_cards(ids)
    assert gc(settings, cards, project.store.save_patch, older_than_days=0) == ["YOUNG"]
    assert [w.card_id for w in list_workspaces(settings)] == ["RUNNING"]
    project.main_untouched()


# ---- distributed: two worker slots on one repository ----------------------------------------------
def test_two_cards_on_one_repo_run_at_once_on_two_worker_slots_in_separate_worktrees(
        tmp_path: Path, redis_url: str, start_worker: Any) -> None:
    project = _repo(tmp_path, agent_args="--sleep 3")
    env = {**project.env, "USE_CELERY": "true", "SQUAD_REDIS_URL": redis_url, "SQUAD_LEASE_S": "5"}
    worker: Worker = start_worker(env, concurrency=2)
    project.seed({"card_id": "A"}, {"card_id": "B"})
    proc = run_cli("orchestrate", "--mode", "celery", "--once", "--wait", "--interval", "0.2", env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr + worker.log()[-3000:]
    a, b = project.mark("A", 1), project.mark("B", 1)
    assert a["start"] < b["end"] and b["start"] < a["end"], "the two cards did not overlap"
    assert {a["cwd"], b["cwd"]} == {str((project.work / "A").resolve()), str((project.work / "B").resolve())}
    assert project.show("squad/A", "A.txt") == "attempt 1\n" and project.show("squad/B", "B.txt") == "attempt 1\n"
    assert "B.txt" not in git(["ls-tree", "-r", "--name-only", "squad/A"], project.repo)
    assert {r.worker for c in "AB" for r in project.store.list_runs(c)} == {worker.hostname}
    project.main_untouched()


# ---- API ---------------------------------------------------------------------------------------
def test_api_diff_approve_reject_need_the_token_answer_409_outside_review_and_emit_status_events(
        tmp_path: Path, redis_url: str) -> None:
    from squad.live.events import decode_event
    from support.api import run_api

    project = _repo(tmp_path, workspace_toml="review = true")
    project.seed({"card_id": "A"}, {"card_id": "B"})
    assert project.orchestrate().returncode == 0
    assert project.status("A") == project.status("B") == Status.REVIEW
    project.seed({"card_id": "T"})  # TODO: not in REVIEW
    settings = load_settings(redis_url=redis_url, database_url=project.db_url, use_celery=False, api_token="tok",
                             workdir=project.work, allowed_roots=str(project.root))
    auth = {"Authorization": "Bearer tok"}
    with run_api(settings) as api, api.client() as http:
        diff = http.get("/api/cards/A/diff", headers=auth).json()
        assert set(diff) >= {"base_commit", "head_commit", "branch", "files", "patch"}
        assert (diff["branch"], diff["base_commit"]) == ("squad/A", project.initial)
        assert {f["path"]: (f["insertions"], f["deletions"]) for f in diff["files"]}["A.txt"] == (1, 0)
        assert "+attempt 1" in diff["patch"]
        assert http.get("/api/cards/NOPE/diff", headers=auth).status_code == 404
        # both actions need the token
        assert http.post("/api/cards/A/approve").status_code == 401
        assert http.post("/api/cards/A/reject", json={"feedback": "x"}).status_code == 401
        # bad bodies are 422, unknown cards 404
        assert http.post("/api/cards/A/reject", json={}, headers=auth).status_code == 422
        assert http.post("/api/cards/A/reject", json={"feedback": "  "}, headers=auth).status_code == 422
        assert http.post("/api/cards/NOPE/approve", headers=auth).status_code == 404
        approved = http.post("/api/cards/A/approve", headers=auth)
        assert approved.status_code == 200 and approved.json()["card"]["status"] == "DONE"
        # not in REVIEW any more: 409, with a reason
        again = http.post("/api/cards/A/approve", headers=auth)
        assert again.status_code == 409 and "not REVIEW" in again.json()["detail"]
        assert http.post("/api/cards/T/reject", json={"feedback": "x"}, headers=auth).status_code == 409
        rejected = http.post("/api/cards/B/reject", json={"feedback": "rename it"}, headers=auth)
        assert rejected.status_code == 200, rejected.text
        body = rejected.json()
        assert body["card"]["status"] == "QUEUED" and body["card"]["feedback"] == "rename it" and body["task_id"]
        assert api.state.settings.api_token == "tok"
        metrics = http.get("/api/metrics", headers=auth).json()
        assert metrics["workspace_disk_bytes"] > 0  # B's worktree is still there
        assert "squad_workspace_disk_bytes" in http.get("/metrics").text
        spaces = http.get("/api/workspaces", headers=auth).json()
        assert [(w["card_id"], w["status"]) for w in spaces] == [("B", "QUEUED")]
    client = redis.Redis.from_url(settings.events, decode_responses=True)
    seen = [(e["card_id"], e["status"]) for eid, f in client.xrange(api.state.keys.task_updates)
            for e in [decode_event(eid, f)] if e.get("type") == "status"]
    assert ("A", "DONE") in seen and ("B", "QUEUED") in seen
    assert not (project.work / "A").exists()  # approved: worktree removed, branch kept
    assert git(["rev-parse", "--verify", "squad/A"], project.repo)


def test_workspace_hooks_run_inside_the_worktree(tmp_path: Path) -> None:
    hook = "import os, sys; open(sys.argv[1], 'a').write(os.getcwd() + chr(10))"
    marks = tmp_path / "marks"
    project = _repo(tmp_path, workspace_toml=f"""
[hooks]
after_create = ["{PY}", "-c", "{hook}", "{marks / 'after_create.txt'}"]
before_run = ["{PY}", "-c", "{hook}", "{marks / 'before_run.txt'}"]
""")
    project.seed({"card_id": "A"})
    assert project.orchestrate().returncode == 0
    worktree = str((project.work / "A").resolve())
    assert (marks / "after_create.txt").read_text().splitlines() == [worktree]
    assert (marks / "before_run.txt").read_text().splitlines() == [worktree]
    project.main_untouched()


# ---- a hostile agent and squad's own git (issue 21 items 2, 4, 5, 6, 7, 14) ---------------------
TOKEN = "tok-4d1c9e-never-leaked"


def _hostile(tmp_path: Path, mode: str, workspace_toml: str = "review = true") -> Repo:
    """A project whose agent is tests/agents/git_planter.py in `mode`, with an API token set."""
    project = _repo(tmp_path, workspace_toml=workspace_toml)
    toml = project.root / "squad.toml"
    old = f'"{AGENTS / "git_worker.py"}", "{project.marks}"'
    new = f'"{AGENTS / "git_planter.py"}", "{project.marks}", "{mode}"'
    toml.write_text(toml.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    assert "git_planter.py" in toml.read_text(encoding="utf-8")
    project.env["SQUAD_API_TOKEN"] = TOKEN
    return project


def _leaks(project: Repo) -> list[str]:
    return [p.read_text(encoding="utf-8") for p in project.marks.glob("ran-*.env")]


def test_programs_an_agent_plants_in_git_never_run_in_the_worker_api_workspace_list_or_approve(
        tmp_path: Path, redis_url: str) -> None:
    from support.api import run_api

    project = _hostile(tmp_path, "programs")
    project.seed({"card_id": "A"})
    proc = project.orchestrate()
    assert proc.returncode == 0, proc.stderr
    assert project.status("A") == Status.REVIEW  # the worker committed (status, add, commit) and read facts
    assert _leaks(project) == []
    assert project.show("squad/A", "A.txt") == "attempt 1\n"  # committed as written: no clean filter ran
    listed = project.cli("workspace", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [w["card_id"] for w in json.loads(listed.stdout)] == ["A"]
    assert _leaks(project) == []
    settings = load_settings(redis_url=redis_url, database_url=project.db_url, use_celery=False, api_token=TOKEN,
                             workdir=project.work, allowed_roots=str(project.root))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with run_api(settings) as api, api.client() as http:
        diff = http.get("/api/cards/A/diff", headers=auth)
        assert diff.status_code == 200 and "+attempt 1" in diff.json()["patch"]
        assert [w["card_id"] for w in http.get("/api/workspaces", headers=auth).json()] == ["A"]
        assert _leaks(project) == []
    approved = project.cli("review", "approve", "A")
    assert approved.returncode == 0, approved.stderr
    assert project.status("A") == Status.DONE and not (project.work / "A").exists()
    assert _leaks(project) == []


def test_an_agent_pointing_git_at_the_repository_itself_cannot_commit_on_its_branch(tmp_path: Path) -> None:
    project = _hostile(tmp_path, "gitdir", workspace_toml="")
    project.seed({"card_id": "A"})
    proc = project.orchestrate()
    assert proc.returncode == 1 and "FAILED" in proc.stdout + proc.stderr
    assert project.status("A") == Status.FAILED
    assert "is not the worktree squad created" in (project.store.get_card("A").last_error or "")
    project.main_untouched()  # nothing committed on main, and main's checkout not touched
    assert "squad: A attempt" not in git(["log", "--format=%s", "--all"], project.repo)


def test_a_worktree_path_that_is_a_link_out_of_the_roots_is_never_used_moved_or_removed(project: Repo,
                                                                                        tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep\n", encoding="utf-8")
    project.work.mkdir(parents=True, exist_ok=True)
    (project.work / "A").symlink_to(outside, target_is_directory=True)
    project.seed({"card_id": "A"})
    assert project.orchestrate().returncode == 1
    assert project.status("A") == Status.FAILED
    assert "symbolic link" in (project.store.get_card("A").last_error or "")
    assert sorted(p.name for p in outside.iterdir()) == ["precious.txt"]  # the agent never ran there
    assert (project.work / "A").is_symlink() and not (project.work / ".archive").exists()


def test_a_card_id_equal_to_a_folder_squad_did_not_create_leaves_the_folder_alone(project: Repo) -> None:
    folder = project.work / "A"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine\n", encoding="utf-8")
    project.seed({"card_id": "A"})
    assert project.orchestrate().returncode == 1
    assert project.status("A") == Status.FAILED
    assert "left untouched" in (project.store.get_card("A").last_error or "")
    assert (folder / "notes.txt").read_text(encoding="utf-8") == "mine\n"
    assert not (project.work / ".archive").exists()


def test_a_repo_inside_the_roots_whose_repository_is_outside_is_refused_at_import_and_before_the_attempt(
        tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    make_repo(outer)
    project = _repo(outer / "proj")
    inner = outer / "proj" / "inside"  # inside the allowed root, but its repository is `outer`
    inner.mkdir()
    project.env["SQUAD_ALLOWED_ROOTS"] = str(outer / "proj")
    backlog_file = outer / "proj" / "backlog.json"
    backlog_file.write_text(json.dumps({"cards": [{"card_id": "A", "title": "t", "repo": str(inner)}]}))
    imported = project.cli("backlog", "import", str(backlog_file))
    assert imported.returncode == 2 and "card A: repo:" in imported.stderr and "outside" in imported.stderr
    project.seed({"card_id": "B", "repo": str(inner)})  # straight into the store, past the import check
    assert project.orchestrate().returncode == 1
    assert project.status("B") == Status.FAILED and "outside the allowed roots" in (
        project.store.get_card("B").last_error or "")
    assert "squad/B" not in git(["branch", "--list"], outer)


def test_after_approve_runs_like_a_hook_scrubbed_bounded_its_group_ended_no_secret_in_the_error(
        tmp_path: Path) -> None:
    # (the hook reads its files in the project's marks folder: a sandbox, where one is on, declares it;
    # its background child is known by a command line of its own, whatever PID namespace it is in)
    secret_file = tmp_path / "marks" / "leaked.txt"
    child = f"{300 + os.getpid() % 1000}.{time.monotonic_ns() % 10**6}"
    script = (f"echo token=$SQUAD_API_TOKEN db=$SQUAD_DATABASE_URL >&2; cat {secret_file} >&2; "
              f"(sleep {child} & echo child started >&2); head -c 3000000 /dev/zero | tr '\\\\0' x; exit 3")
    project = _repo(tmp_path,
                    workspace_toml=f'review = true\nhook_timeout = 30\nafter_approve = ["sh", "-c", "{script}"]')
    secret_file.write_text(TOKEN, encoding="utf-8")
    project.env["SQUAD_API_TOKEN"] = TOKEN
    project.seed({"card_id": "A"})
    assert project.orchestrate().returncode == 0
    proc = project.cli("review", "approve", "A")
    assert proc.returncode == 1 and "after_approve exited with 3" in proc.stderr
    assert "child started" in proc.stderr
    card = project.store.get_card("A")
    assert card.status == Status.REVIEW
    for text in (proc.stderr, card.last_error or ""):
        assert TOKEN not in text and "squad.db" not in text
        assert "token= db=" in text and "***" in text  # scrubbed environment; the file's copy masked
        assert len(text) < 10_000
    assert wait_for(lambda: not _running("sleep", child), timeout=10), "the hook's background child outlived it"


def _running(*argv: str) -> bool:
    """Whether a live process of the machine runs exactly `argv`."""
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["cmdline"] == list(argv) and proc.info["status"] != psutil.STATUS_ZOMBIE:
            return True
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_repo_dot_puts_the_work_folder_in_info_exclude_never_in_gitignore(tmp_path: Path) -> None:
    repo = tmp_path / "proj"
    make_repo(repo)
    settings = load_settings(workdir=repo / ".squad" / "work", allowed_roots=str(repo))
    from squad.core.cards import Card
    card = Card.model_validate({"card_id": "A", "title": "t", "repo": str(repo)})
    ws = workspace_for(settings, card)
    assert ws is not None
    prepare(settings, ws)
    prepare(settings, ws)  # twice: one line
    exclude = (repo / ".git" / "info" / "exclude").read_text(encoding="utf-8")
    assert exclude.splitlines().count("/.squad/") == 1
    assert not (repo / ".gitignore").exists()
    assert git(["status", "--porcelain", "--untracked-files=all"], repo) == ""
