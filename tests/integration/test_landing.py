"""Landing the work with real git: a bare remote and two clones (two "machines"), real `squad`
subprocesses, a fake agent that edits files and resolves conflict markers (tests/agents/lander.py)
and a real verify command (tests/agents/verify_lines.py). In every test the user's own clone is
byte for byte what it was (HEAD, index, files)."""

from __future__ import annotations

import hashlib
import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from squad.attempt.workspaces import git
from squad.core.cards import CardSpec
from squad.core.statuses import Status
from squad.store.card_store import CardStore
from support.cli import run_cli, squad_env
from support.fake_agents import sandbox_toml
from support.paths import AGENTS
from support.processes import free_port, kill_tree, wait_for
from support.repos import make_repo

PY = sys.executable
VERIFY = [PY, str(AGENTS / "verify_lines.py")]
GATE = [PY, str(AGENTS / "verify_gate.py")]


def snapshot(repo: Path) -> dict[str, str]:
    """HEAD, the index file's bytes and every file's bytes (outside .git's objects) of a clone."""
    state = {"HEAD": git(["rev-parse", "HEAD"], repo).strip(),
             "ref": (repo / ".git" / "HEAD").read_text(),
             "index": hashlib.sha256((repo / ".git" / "index").read_bytes()).hexdigest()}
    for path in sorted(repo.rglob("*")):
        if ".git" in path.relative_to(repo).parts or not path.is_file():
            continue
        state[str(path.relative_to(repo))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


class Machines:
    """A bare remote, the user's own clone, and one clone per "machine"; one store for all of them."""

    def __init__(self, root: Path, workspace_toml: str = "", agent_args: str = "", *, remote: bool = True,
                 agents_toml: str = "") -> None:
        self.root = root
        self.origin = root / "origin.git"
        seed = root / "seed"
        self.initial = make_repo(seed)
        (seed / "shared.txt").write_text("first line\nsecond line\n", encoding="utf-8")
        git(["add", "-A"], seed)
        git(["commit", "-q", "-m", "shared file"], seed)
        self.initial = git(["rev-parse", "HEAD"], seed).strip()
        git(["clone", "-q", "--bare", str(seed), str(self.origin)], root)
        self.user = self.clone("user")  # the user's own clone: squad never changes it
        self.user_before = snapshot(self.user)
        self.marks = root / "marks"
        self.marks.mkdir()
        self.db_url = f"sqlite:///{root / 'squad.db'}"
        args = "".join(f', "{a}"' for a in agent_args.split())
        (root / "squad.toml").write_text(f"""
default_agent = "lander"
{sandbox_toml(self.marks)}
[agents.lander]
command = ["{PY}", "{AGENTS / 'lander.py'}", "{self.marks}"{args}]
[agents.slow]
command = ["{PY}", "{AGENTS / 'lander.py'}", "{self.marks}", "--sleep", "4"{args}]
{agents_toml}
[workspace]
{'remote = "origin"' if remote else ''}
{workspace_toml}
""", encoding="utf-8")
        self.store = CardStore(self.db_url)

    def clone(self, name: str) -> Path:
        path = self.root / name
        git(["clone", "-q", str(self.origin), str(path)], self.root)
        git(["config", "user.email", f"{name}@example.com"], path)
        git(["config", "user.name", name], path)
        return path

    def env(self, clone: Path, **extra: str) -> dict[str, str]:
        work = self.root / f"work-{clone.name}"
        return squad_env(USE_CELERY="false", SQUAD_REDIS_URL=f"redis://127.0.0.1:{free_port()}",
                         SQUAD_DATABASE_URL=self.db_url, SQUAD_MAX_RETRIES="2", SQUAD_RETRY_BACKOFF="0",
                         SQUAD_ALLOWED_ROOTS=str(self.root), SQUAD_WORKDIR=str(work), SQUAD_LEASE_S="3",
                         SQUAD_CONFIG=str(self.root / "squad.toml"), SQUAD_WORKSPACE_REPO=str(clone), **extra)

    def seed(self, *cards: dict[str, Any]) -> None:
        self.store.add_cards([CardSpec(**{"title": f"title of {c['card_id']}", **c}) for c in cards])

    def orchestrate(self, clone: Path, **extra: str) -> subprocess.CompletedProcess[str]:
        return run_cli("orchestrate", "--mode", "local", "--once", "--wait", "--interval", "0.2",
                       env=self.env(clone, **extra), timeout=240)

    def prompt(self, card_id: str, attempt: int) -> str:
        return (self.marks / f"{card_id}-{attempt}.prompt").read_text(encoding="utf-8")

    def mark(self, card_id: str, attempt: int) -> dict[str, Any]:
        return dict(json.loads((self.marks / f"{card_id}-{attempt}.json").read_text()))

    def remote_show(self, ref: str, path: str) -> str:
        return git(["show", f"{ref}:{path}"], self.origin)

    def remote_head(self, branch: str = "main") -> str:
        return git(["rev-parse", f"refs/heads/{branch}"], self.origin).strip()

    def start_orchestrator(self, clone: Path, name: str, **extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([PY, "-m", "squad", "orchestrate", "--mode", "local", "--wait", "--interval", "0.2"],
                                env=self.env(clone, **extra), stdout=subprocess.DEVNULL,
                                stderr=open(self.root / f"{name}.log", "wb"), start_new_session=True)

    def user_untouched(self) -> None:
        assert snapshot(self.user) == self.user_before


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[Machines]:
    m = Machines(tmp_path)
    yield m
    m.user_untouched()
    m.store.dispose()


# ---- (a) the shared remote ------------------------------------------------------------------------
def test_a_retry_on_the_second_machine_continues_the_first_machines_commits(tmp_path: Path) -> None:
    m = Machines(tmp_path, agent_args="--fail-first")
    one, two = m.clone("one"), m.clone("two")
    m.seed({"card_id": "A", "max_retries": 0})
    # machine one runs attempt 1 (it fails); its work is committed and pushed anyway
    proc = m.orchestrate(one)
    assert proc.returncode == 1, proc.stderr
    assert m.store.get_card("A").status == Status.FAILED
    assert m.remote_show("squad/A", "A.txt") == "A attempt 1\n"
    # the retry runs on machine two, whose clone never had the branch: it continues from the remote's
    assert run_cli("retry", "A", env=m.env(two)).returncode == 0
    proc = m.orchestrate(two)
    assert proc.returncode == 0, proc.stderr
    assert m.mark("A", 2)["cwd"] == str((tmp_path / "work-two" / "A").resolve())
    assert "A.txt" in m.mark("A", 2)["files"]
    assert m.remote_show("squad/A", "A.txt") == "A attempt 1\nA attempt 2\n"
    log = git(["log", "--format=%s", "origin/squad/A"], two)
    assert "squad: A attempt 1" in log and "squad: A attempt 2" in log
    m.user_untouched()
    m.store.dispose()


# ---- (b) the verify gate ----------------------------------------------------------------------------
def test_verify_fails_then_passes_and_its_output_is_in_the_second_prompt(machines: Machines) -> None:
    m = machines
    one = m.clone("one")
    m.seed({"card_id": "A", "verify": [*VERIFY, "2", "A.txt"]})
    proc = m.orchestrate(one)
    assert proc.returncode == 0, proc.stderr
    first, second = m.store.list_runs("A")
    assert (first.status, first.error, first.verify_exit) == ("failed", "verify failed (exit 1)", 1)
    assert "VERIFY-FAIL A.txt: 1 line(s), want 2" in (first.verify_output or "")
    assert (second.status, second.verify_exit) == ("succeeded", 0)
    assert "## Verify failed" not in m.prompt("A", 1)
    assert "## Verify failed" in m.prompt("A", 2) and "VERIFY-FAIL A.txt: 1 line(s), want 2" in m.prompt("A", 2)
    assert m.store.get_card("A").status == Status.DONE
    card = json.loads(run_cli("card", "show", "A", "--json", env=m.env(one)).stdout)
    assert [r["verify_exit"] for r in card["runs"]] == [1, 0]


def test_verify_set_per_process_and_its_timeout_end_its_whole_group(machines: Machines) -> None:
    m = machines
    one = m.clone("one")
    m.seed({"card_id": "A", "max_retries": 0})
    sleeper = json.dumps([PY, "-c", "import subprocess,sys; subprocess.Popen(['sleep','300']); "
                          "print('started', flush=True); import time; time.sleep(300)"])
    proc = m.orchestrate(one, SQUAD_WORKSPACE_VERIFY=sleeper, SQUAD_WORKSPACE_VERIFY_TIMEOUT="1")
    assert proc.returncode == 1, proc.stderr
    run = m.store.list_runs("A")[0]
    assert run.error == "verify timed out after 1s" and "started" in (run.verify_output or "")


# ---- (c) dependants build on their dependencies -----------------------------------------------------
def test_with_land_none_a_dependant_starts_from_its_dependencys_branch(machines: Machines) -> None:
    m = machines
    one = m.clone("one")
    m.seed({"card_id": "A"}, {"card_id": "B", "depends_on": ["A"]})
    proc = m.orchestrate(one)
    assert proc.returncode == 0, proc.stderr
    assert "A.txt" in m.mark("B", 1)["files"]  # B's worktree starts with A's change
    assert m.remote_show("squad/B", "A.txt") == "A attempt 1\n"
    run = m.store.list_runs("B")[0]
    assert run.files_changed == 1  # B's own change only: its base is A's head


def test_two_dependencies_that_conflict_fail_the_dependant_with_dependencies_conflict(tmp_path: Path) -> None:
    m = Machines(tmp_path, agent_args="--shared shared.txt")
    one = m.clone("one")
    m.seed({"card_id": "A"}, {"card_id": "B"}, {"card_id": "C", "depends_on": ["A", "B"]})
    proc = m.orchestrate(one)
    assert proc.returncode == 1
    card = m.store.get_card("C")
    assert (card.status, card.last_error) == (Status.FAILED, "dependencies conflict")
    assert not (m.marks / "C-1.json").exists()
    m.user_untouched()
    m.store.dispose()


def test_two_dependencies_that_merge_cleanly_start_the_dependant_from_their_merge(machines: Machines) -> None:
    m = machines
    one = m.clone("one")
    m.seed({"card_id": "A"}, {"card_id": "B"}, {"card_id": "C", "depends_on": ["A", "B"]})
    proc = m.orchestrate(one)
    assert proc.returncode == 0, proc.stderr
    assert {"A.txt", "B.txt"} <= set(m.mark("C", 1)["files"])


# ---- (d) landing and the merge train ----------------------------------------------------------------
def test_two_cards_editing_the_same_line_land_one_after_the_other_the_second_resolving_markers(
        tmp_path: Path) -> None:
    m = Machines(tmp_path, workspace_toml='land = "merge"', agent_args="--shared shared.txt")
    one = m.clone("one")
    m.seed({"card_id": "A"}, {"card_id": "B", "agent": "slow"})
    proc = m.orchestrate(one)
    assert proc.returncode == 0, proc.stderr
    assert m.store.get_card("A").status == m.store.get_card("B").status == Status.DONE
    # B's branch started from the old base: its landing conflicted, the next attempt got the markers
    prompt = m.prompt("B", 2)
    assert "## Conflicts with the base branch" in prompt and "- shared.txt" in prompt
    assert m.mark("B", 2)["resolved"] == ["shared.txt"]
    first = m.store.list_runs("B")[0]  # the landing's lines are on the landed run's archived log
    assert "landing: conflict with main: shared.txt; back to its agent" in m.store.run_log(first.id)
    shared = m.remote_show("main", "shared.txt")
    assert "A was here" in shared and "B was here" in shared and "<<<<<<<" not in shared
    landed = {cid: [r.landed_commit for r in m.store.list_runs(cid) if r.landed_commit] for cid in ("A", "B")}
    assert len(landed["A"]) == 1 and len(landed["B"]) == 1
    assert landed["B"][0] == m.remote_head()
    git(["fetch", "-q", "origin"], one)
    assert git(["merge-base", "--is-ancestor", landed["A"][0], landed["B"][0]], one, check=False) == ""
    assert m.remote_show("main", "A.txt") == "A attempt 1\n"
    m.user_untouched()
    m.store.dispose()


def test_a_verify_failure_after_a_clean_merge_goes_back_to_the_agent(tmp_path: Path) -> None:
    m = Machines(tmp_path, workspace_toml='land = "merge"')
    one = m.clone("one")
    # B passes its own verify (A.txt is not in its branch) but not on base once A landed there
    m.seed({"card_id": "A"}, {"card_id": "B", "agent": "slow", "verify": [*VERIFY, "2", "A.txt"]})
    proc = m.orchestrate(one)
    assert proc.returncode == 0, proc.stderr
    assert m.store.get_card("B").status == Status.DONE
    runs = m.store.list_runs("B")
    assert runs[0].verify_exit == 1 and "VERIFY-FAIL A.txt: 1 line(s), want 2" in (runs[0].verify_output or "")
    assert "## Verify failed" in m.prompt("B", 2) and "VERIFY-FAIL A.txt" in m.prompt("B", 2)
    archived = m.store.run_log(runs[0].id)  # the landing's verify, summed up, on the run's archived log
    assert "[verify] VERIFY-FAIL A.txt: 1 line(s), want 2" in archived
    assert "landing: verify failed (exit 1) on the landed result; back to its agent" in archived
    assert f"landed {runs[-1].landed_commit[:12]} on main" in m.store.run_log(runs[-1].id)
    assert runs[-1].verify_exit == 0 and runs[-1].landed_commit == m.remote_head()
    assert m.remote_show("main", "A.txt") == "A attempt 1\nfixed by B\n"
    m.user_untouched()
    m.store.dispose()


def test_without_a_remote_base_checked_out_by_the_user_stays_landing_with_one_line_then_lands_by_hand(
        tmp_path: Path) -> None:
    m = Machines(tmp_path, workspace_toml='land = "squash"\nbase = "main"', remote=False)
    m.seed({"card_id": "A"})
    orch = m.start_orchestrator(m.user, "orch")
    try:
        wait_for(lambda: "checked out in" in (m.store.get_card("A").last_error or ""), 120,
                 message="A refused to land")
    finally:
        kill_tree(orch)
    card = m.store.get_card("A")
    assert card.status == Status.LANDING
    assert card.last_error == (f"cannot land: base main is checked out in {m.user.resolve()}, which squad does not "
                               "change; set [workspace] remote, or check out another branch there")
    m.user_untouched()  # HEAD, index and files as they were, though the refused landing was on this clone
    archived = m.store.run_log(m.store.list_runs("A")[-1].id)  # said once, not on every pass
    assert archived.count("cannot land: base main is checked out in") == 1, archived
    show = run_cli("review", "show", "A", "--stat", env=m.env(m.user))
    assert "status LANDING" in show.stdout and "last error: cannot land: base main is checked out" in show.stdout
    # the user moves their checkout elsewhere: `squad land` lands it by hand (squash: one commit on main)
    git(["checkout", "-q", "-b", "elsewhere"], m.user)
    before = git(["rev-parse", "main"], m.user).strip()
    proc = run_cli("land", "A", env=m.env(m.user))
    assert proc.returncode == 0 and "card A DONE" in proc.stdout, proc.stdout + proc.stderr
    main = git(["rev-parse", "main"], m.user).strip()
    assert git(["rev-parse", "main^"], m.user).strip() == before
    assert git(["show", "main:A.txt"], m.user) == "A attempt 1\n"
    assert m.store.list_runs("A")[-1].landed_commit == main
    assert git(["rev-parse", "HEAD"], m.user).strip() == before  # the user's checkout did not move
    m.store.dispose()


def _wait_exit(*procs: subprocess.Popen[bytes], timeout: float = 240) -> None:
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                kill_tree(proc)


def test_the_lander_killed_mid_landing_leaves_base_before_and_the_train_goes_on(tmp_path: Path) -> None:
    m = Machines(tmp_path, workspace_toml='land = "merge"')
    one, two = m.clone("one"), m.clone("two")
    m.seed({"card_id": "A", "verify": [*GATE, str(m.marks), "land", "release"]}, {"card_id": "B"})
    lander = m.start_orchestrator(one, "orch-one")
    try:
        wait_for(lambda: (m.marks / "land-started").exists(), 120, message="A's landing verify started")
        before = m.remote_head()
        kill_tree(lander, sig=signal.SIGKILL)  # kill -9, mid-landing (its verify is running)
    finally:
        if lander.poll() is None:
            kill_tree(lander)
    assert m.store.get_card("A").status == Status.LANDING
    assert m.remote_head() == before  # base before: nothing half-moved
    (m.marks / "release").write_text("go")
    # another machine's lander takes the train over once the dead one's lease ran out
    killed_at = time.monotonic()
    proc = m.orchestrate(two)
    print(f"figure: lander killed -> train on, both DONE in {time.monotonic() - killed_at:.1f} s")
    assert proc.returncode == 0, proc.stderr
    assert m.store.get_card("A").status == m.store.get_card("B").status == Status.DONE
    head = m.remote_head()
    assert m.remote_show("main", "A.txt") == "A attempt 1\n" and m.remote_show("main", "B.txt") == "B attempt 1\n"
    assert [r.landed_commit for r in m.store.list_runs("A") if r.landed_commit]
    assert git(["fsck", "--no-progress"], m.origin) == ""
    assert head != before
    m.user_untouched()
    m.store.dispose()


def test_the_lander_killed_after_base_moved_before_done_is_finished_once_by_the_next(tmp_path: Path) -> None:
    marks = tmp_path / "marks"  # the hook writes there (Machines' [sandbox] declares it, and the agents' folder)
    hook = json.dumps([*GATE, str(marks), "afterland", "release-hook"])
    m = Machines(tmp_path, workspace_toml=f'land = "merge"\nafter_land = {hook}')
    one, two = m.clone("one"), m.clone("two")
    m.seed({"card_id": "A"}, {"card_id": "B"})
    lander = m.start_orchestrator(one, "orch-one")
    try:  # the first card's after_land hook blocks on a gate: base has moved, the card is not DONE yet
        wait_for(lambda: (marks / "afterland-started").exists(), 120, message="the first after_land hook started")
        first = (marks / "afterland-started").read_text()  # whichever attempt finished first landed first
        second = {"A": "B", "B": "A"}[first]
        wait_for(lambda: m.store.get_card(second).status == Status.LANDING, 120,
                 message=f"{second} waiting in the train behind {first}")
        moved = m.remote_head()
        kill_tree(lander, sig=signal.SIGKILL)  # kill -9 between base moved and DONE
    finally:
        if lander.poll() is None:
            kill_tree(lander)
    assert m.store.get_card(first).status == Status.LANDING
    [run] = [r for r in m.store.list_runs(first) if r.landed_commit]
    assert run.landed_commit == moved and moved != m.initial  # base moved: the merge is on the remote
    (marks / "release-hook").write_text("go")
    killed_at = time.monotonic()
    proc = m.orchestrate(two)  # another machine's lander takes the train over once the lease ran out
    print(f"figure: lander killed after base moved -> {first} finished, {second} landed in "
          f"{time.monotonic() - killed_at:.1f} s")
    assert proc.returncode == 0, proc.stderr
    assert m.store.get_card(first).status == m.store.get_card(second).status == Status.DONE
    # the first card landed once: the commit already on base is its landed commit, no second merge of it
    assert [r.landed_commit for r in m.store.list_runs(first) if r.landed_commit] == [moved]
    subjects = git(["log", "--format=%s", "main"], m.origin).splitlines()
    assert sum(s.startswith(f"squad: land {first}:") for s in subjects) == 1, subjects
    assert sum(s == f"squad: {first} attempt 1" for s in subjects) == 1, subjects
    [next_landed] = [r.landed_commit for r in m.store.list_runs(second) if r.landed_commit]
    assert next_landed == m.remote_head() and git(["rev-parse", f"{next_landed}^1"], m.origin).strip() == moved
    assert m.remote_show("main", "A.txt") == "A attempt 1\n" and m.remote_show("main", "B.txt") == "B attempt 1\n"
    assert git(["fsck", "--no-progress"], m.origin) == ""
    # after_land ran again (docs/workspaces.md): the killed run started, the next lander's ran to its end
    hook_runs = [line.split()[:2] for line in (marks / "afterland.log").read_text().splitlines()]
    assert hook_runs.count(["start", first]) == 2 and hook_runs.count(["end", first]) == 1, hook_runs
    assert hook_runs.count(["start", second]) == hook_runs.count(["end", second]) == 1, hook_runs
    # both landers' lines are on the run's archived log, not only on the live log
    archived = m.store.run_log(run.id)
    sha = moved[:12]
    assert f"landing squad/{first} on main (merge)" in archived
    assert f"landed {sha} on main\n" in archived + "\n"
    assert f"landed {sha} on main (found on base)" in archived
    assert f"[after_land] landing of {first} verified" in archived
    assert archived.index(f"landed {sha} on main\n") < archived.index("(found on base)")
    shown = run_cli("logs", first, "--run", str(run.attempt), env=m.env(two))
    assert shown.returncode == 0 and f"landed {sha} on main (found on base)" in shown.stdout, shown.stderr
    m.user_untouched()
    m.store.dispose()


def test_two_trains_land_side_by_side_while_each_train_is_strictly_serial_across_two_landers(
        tmp_path: Path) -> None:
    m = Machines(tmp_path, workspace_toml='land = "merge"')
    one, two = m.clone("one"), m.clone("two")
    # a second repository (its own remote, one clone at the same path for both machines)
    other_seed = tmp_path / "other-seed"
    make_repo(other_seed)
    other_origin = tmp_path / "other.git"
    git(["clone", "-q", "--bare", str(other_seed), str(other_origin)], tmp_path)
    other = tmp_path / "other"
    git(["clone", "-q", str(other_origin), str(other)], tmp_path)
    for args in (["config", "user.email", "o@example.com"], ["config", "user.name", "o"]):
        git(args, other)
    x_verify = [*GATE, str(m.marks), "trainX", "trainY-started"]
    y_verify = [*GATE, str(m.marks), "trainY", "trainX-started"]
    m.seed({"card_id": "X1", "verify": x_verify}, {"card_id": "X2", "verify": x_verify},
           {"card_id": "X3", "verify": x_verify}, {"card_id": "Y1", "repo": str(other), "verify": y_verify})
    started = time.monotonic()
    landers = [m.start_orchestrator(one, "orch-one"), m.start_orchestrator(two, "orch-two")]
    _wait_exit(*landers)
    print(f"figure: two landers, two trains, 4 cards DONE in {time.monotonic() - started:.1f} s")
    for cid in ("X1", "X2", "X3", "Y1"):
        assert m.store.get_card(cid).status == Status.DONE, (cid, m.store.get_card(cid).last_error)

    def intervals(name: str) -> list[tuple[float, float]]:
        lines = [line.split() for line in (m.marks / f"{name}.log").read_text().splitlines()]
        starts = {c: float(t) for kind, c, t in lines if kind == "start"}
        ends = {c: float(t) for kind, c, t in lines if kind == "end"}
        return sorted((starts[c], ends[c]) for c in starts)

    x, y = intervals("trainX"), intervals("trainY")
    assert len(x) == 3 and len(y) == 1
    # one repository's train is strictly serial, whichever of the two landers ran each landing ...
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(x))
    # ... while the other repository's train ran at the same time (each verify waited for the other's)
    assert any(xs < y[0][1] and y[0][0] < xe for xs, xe in x)
    assert git(["show", "main:Y1.txt"], other_origin) == "Y1 attempt 1\n"
    assert {"X1.txt", "X2.txt", "X3.txt"} <= set(git(["ls-tree", "--name-only", "main"], m.origin).split())
    m.user_untouched()
    m.store.dispose()


def test_approve_lands_the_card_runs_after_land_and_deletes_the_landed_branch_on_the_remote(
        tmp_path: Path) -> None:
    hook_out = tmp_path / "marks" / "after_land.txt"  # in the marks folder: a sandbox, where one is on, declares it
    hook = json.dumps([PY, "-c", f"import sys; open({str(hook_out)!r}, 'w').write(' '.join(sys.argv[1:]))",
                       "{branch}", "{landed_commit}", "{card_id}"])
    m = Machines(tmp_path, workspace_toml=f'land = "rebase"\nreview = true\ndelete_landed_branch = true\n'
                                          f'after_land = {hook}')
    one = m.clone("one")
    m.seed({"card_id": "A"})
    proc = m.orchestrate(one)
    assert proc.returncode == 0, proc.stderr
    assert m.store.get_card("A").status == Status.REVIEW
    assert m.remote_head() == m.initial  # nothing lands before the approval
    approve = run_cli("review", "approve", "A", env=m.env(one))
    assert approve.returncode == 0 and "card A LANDING" in approve.stdout, approve.stdout + approve.stderr
    proc = m.orchestrate(one)  # an orchestrator pass lands what nobody else lands
    assert proc.returncode == 0, proc.stderr
    assert m.store.get_card("A").status == Status.DONE
    landed = m.store.list_runs("A")[-1].landed_commit
    # rebase: base fast-forwarded to the rebased card commit (no merge commit)
    assert landed == m.remote_head() and git(["rev-parse", f"{landed}^"], m.origin).strip() == m.initial
    assert hook_out.read_text() == f"squad/A {landed} A"
    assert git(["ls-remote", "--heads", str(m.origin), "squad/A"], tmp_path) == ""
    m.user_untouched()
    m.store.dispose()


def test_land_by_hand_refuses_a_card_that_is_not_done_with_one_line(machines: Machines) -> None:
    m = machines
    one = m.clone("one")
    m.seed({"card_id": "T"})
    proc = run_cli("land", "T", env=m.env(one))
    assert proc.returncode == 2 or proc.returncode == 1
    assert proc.stderr == "squad: error: card T is TODO: only a DONE or REVIEW card can land\n"
    assert run_cli("land", "NOPE", env=m.env(one)).stderr == "squad: error: unknown card 'NOPE'\n"
    assert m.store.get_card("T").status == Status.TODO
