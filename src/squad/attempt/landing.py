"""Landing the work: the merge train of each repository and base (docs/workspaces.md "Landing the work").

A card to land is LANDING. `land_ready` lands such cards one at a time per train (repository and
base), oldest first, held across machines by a row in the store with a lease (`land_trains`): a
lander that dies stops renewing it and the next lander takes the train over. Landing a card: base
brought up to date (from the remote when set), the card branch applied as `land` says (merge, rebase,
squash) in a worktree of squad's own (`SQUAD_WORKDIR/.landing/<card_id>`), verify run on the result,
then base moved in one step (a push with a lease, or `update-ref` with the old value): base is either
before or after, never half. The commit is written on the card's run (`landed_commit`) before base
moves, so a lander killed between the two is finished by the next one. A checkout squad did not
create is never touched: without a remote, base checked out in the user's own working tree stops
the train with one line saying how to fix it.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from squad.agents.runner import expand_argv
from squad.attempt.agent_env import agent_environment
from squad.attempt.archive import LogArchive
from squad.attempt.hooks import card_sandbox, run_hook
from squad.attempt.verify import run_verify, verify_argv
from squad.attempt.workspaces import (
    Workspace,
    WorkspaceError,
    base_branch,
    conflicted_files,
    delete_remote_branch,
    fetch_branch,
    git,
    git_common_dir,
    identity_env,
    is_ancestor,
    land_mode,
    push_branch,
    remove,
    repo_lock,
    workspace_for,
)
from squad.core.cards import Card
from squad.core.errors import SquadError
from squad.core.retries import RetryPolicy
from squad.core.settings import Settings
from squad.core.statuses import Status
from squad.live.events import EventBus, format_log_line, iso_now, log_event, status_event
from squad.store.card_store import CardStore

log = structlog.get_logger(__name__)

__all__ = ["LANDING_DIR", "land_ready", "train_of"]

LANDING_DIR = ".landing"  # under SQUAD_WORKDIR: the worktrees landings are made in
#: trains looked at per `land_ready` call at most (each round lands at most one card per train)
MAX_ROUNDS = 1000
#: what the run's archived log keeps of one command's output (verify, after_land): its head and tail
OUTPUT_ARCHIVE_BYTES = 64 * 1024


@dataclass
class Lander:
    """One process landing cards: who it is (the train's holder) and where it reports.

    Its lines go to the card's live log and, durably, to the archived log of the run being landed
    (after the attempt's own lines): the lander's own lines at once, a command's output (bounded,
    head and tail) once the command ended."""

    settings: Settings
    store: CardStore
    events: EventBus | None
    holder: str
    runs: dict[str, int] = field(default_factory=dict)  # card -> the run its landing lines are archived on
    outputs: dict[str, LogArchive] = field(default_factory=dict)  # card -> command output not archived yet

    def _live(self, card_id: str, level: str, message: str) -> str:
        """One line on the card's live log (and the process's own log); its timestamp."""
        log.info("landing", card_id=card_id, level=level, message=message)
        ts = iso_now()
        if self.events is not None:
            self.events.append_logs(card_id, None, [(ts, level, message)],
                                    [log_event(card_id, "", level=level, message=message, timestamp=ts)])
        return ts

    def line(self, card_id: str, level: str, message: str) -> None:
        """One line of the lander's own: live, and at once on the run's archived log."""
        ts = self._live(card_id, level, message)
        self.flush(card_id, format_log_line(ts, level, message))

    def output(self, card_id: str, level: str, message: str) -> None:
        """One line of a command the landing runs: live, archived with `flush`."""
        ts = self._live(card_id, level, message)
        if card_id in self.runs:
            archive = self.outputs.setdefault(card_id, LogArchive(OUTPUT_ARCHIVE_BYTES))
            archive.add(format_log_line(ts, level, message))

    def flush(self, card_id: str, extra: str = "") -> None:
        """Append the command output kept so far (and `extra`) to the run's archived log."""
        run_id = self.runs.get(card_id)
        if run_id is None:
            return
        pending = self.outputs.pop(card_id, None)
        text = "\n".join(part for part in (pending.text() if pending else "", extra) if part)
        try:
            self.store.append_run_log(run_id, text)
        except Exception as exc:  # a store blip costs the archived copy only: the live log has it
            log.warning("landing lines not archived", card_id=card_id, error=str(exc))

    def status(self, card_id: str, status: Status, error: str | None = None) -> None:
        if self.events is not None:
            self.events.publish(status_event(card_id, status, None, error=error))


def train_of(ws: Workspace) -> str:
    """A train's name, the same on every machine: the remote's URL (else the repository) and the base."""
    where = str(ws.repo)
    if ws.remote:
        where = git(["remote", "get-url", ws.remote], ws.repo).strip() or where
    return f"{where}#{base_branch(ws)}"


class _TrainLease:
    """Renews the train's lease while a card lands; `lost` is set when another lander took it over."""

    def __init__(self, store: CardStore, train: str, holder: str, lease_s: float) -> None:
        self.store, self.train, self.holder, self.lease_s = store, train, holder, lease_s
        self.lost = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="train-lease")

    def _run(self) -> None:
        while not self.stop.wait(self.lease_s / 3):
            try:
                if not self.store.renew_train(self.train, self.holder, self.lease_s):
                    self.lost.set()
                    return
            except Exception as exc:  # a store blip: the next renewal tries again
                log.warning("train lease not renewed", train=self.train, error=str(exc))

    def __enter__(self) -> _TrainLease:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def land_ready(settings: Settings, store: CardStore, events: EventBus | None, worker: str = "local") -> list[str]:
    """Land every LANDING card whose train is free: per train the oldest first, one at a time; the
    ids that landed (went DONE). Cards whose train another lander holds are left to it."""
    lander = Lander(settings, store, events, f"{worker}:{uuid.uuid4().hex[:12]}")
    landed: list[str] = []
    for _ in range(MAX_ROUNDS):
        moved = False
        seen: set[str] = set()
        for card in store.landing_cards():
            try:
                ws = workspace_for(settings, card)
                if ws is None:
                    raise SquadError("no workspace repository ([workspace] repo or the card's repo)")
                train = train_of(ws)
            except SquadError as exc:
                store.note_landing(card.card_id, f"cannot land: {exc}")
                continue
            if train in seen:  # one card per train and round: the oldest
                continue
            seen.add(train)
            if not store.take_train(train, lander.holder, card.card_id, settings.lease_s):
                continue
            try:
                with _TrainLease(store, train, lander.holder, settings.lease_s) as lease:
                    new = _land(lander, card, ws, lease)
            finally:
                store.release_train(train, lander.holder)
            if new is not None:
                moved = True
                if new == Status.DONE:
                    landed.append(card.card_id)
        if not moved:
            break
    return landed


def _base_checked_out_by_user(settings: Settings, ws: Workspace, branch: str) -> Path | None:
    """The working tree squad did not create that has `branch` checked out (None: none has)."""
    own = settings.workdir.resolve()
    out = git(["worktree", "list", "--porcelain"], ws.repo)
    for block in out.strip().split("\n\n"):
        fields = dict(line.split(" ", 1) for line in block.splitlines() if " " in line)
        if fields.get("branch") == f"refs/heads/{branch}":
            path = Path(fields.get("worktree", "")).resolve()
            if not path.is_relative_to(own):
                return path
    return None


def _landing_tree(settings: Settings, ws: Workspace) -> Path:
    return (settings.workdir / LANDING_DIR / ws.card_id).resolve()


def _drop_tree(ws: Workspace, path: Path) -> None:
    """Remove a landing worktree (what a killed lander left included)."""
    with repo_lock(ws.repo):
        git(["worktree", "remove", "--force", "--force", str(path)], ws.repo, check=False)
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        git(["worktree", "prune"], ws.repo)


def _land(lander: Lander, card: Card, ws: Workspace, lease: _TrainLease) -> Status | None:
    """Land one card (its train held); the card's new status, or None when it stays LANDING."""
    settings, store, cid = lander.settings, lander.store, card.card_id
    mode = land_mode(settings, card)
    run = store.latest_workspace_run(cid)
    if run is not None:
        lander.runs[cid] = run.id
    try:
        base = base_branch(ws)
        if ws.remote:
            base_commit = fetch_branch(ws.repo, ws.remote, base)
            if base_commit is None:
                raise WorkspaceError(f"base {base} is not a branch of remote {ws.remote}")
            head = fetch_branch(ws.repo, ws.remote, ws.branch) or git(["rev-parse", ws.branch], ws.repo).strip()
        else:
            if (user_tree := _base_checked_out_by_user(settings, ws, base)) is not None:
                error = (f"cannot land: base {base} is checked out in {user_tree}, which squad does not change; "
                         f"set [workspace] remote, or check out another branch there")
                _cannot_land(lander, cid, error)
                return None
            base_commit = git(["rev-parse", "--verify", f"refs/heads/{base}^{{commit}}"], ws.repo).strip()
            head = git(["rev-parse", "--verify", f"refs/heads/{ws.branch}^{{commit}}"], ws.repo).strip()
    except SquadError as exc:
        _cannot_land(lander, cid, f"cannot land: {exc}")
        return None
    # A lander killed after moving base and before recording DONE: base already holds the commit.
    if run is not None and run.landed_commit and is_ancestor(ws.repo, run.landed_commit, base_commit):
        return _done(lander, card, ws, run.id, run.landed_commit, resumed=True)
    if is_ancestor(ws.repo, head, base_commit):  # nothing left to land
        return _done(lander, card, ws, run.id if run else None, base_commit, resumed=True)
    tree = _landing_tree(settings, ws)
    _drop_tree(ws, tree)
    lander.line(cid, "INFO", f"landing {ws.branch} on {base} ({mode}) at {base_commit[:12]}")
    try:
        with repo_lock(ws.repo):
            tree.parent.mkdir(parents=True, exist_ok=True)
            git(["worktree", "add", "--detach", "--quiet", str(tree), base_commit], ws.repo)
        result, conflicts = _apply(mode, tree, card, ws, head, base_commit)
    except SquadError as exc:
        _drop_tree(ws, tree)
        _cannot_land(lander, cid, f"cannot land: {exc}")
        return None
    if conflicts:
        _drop_tree(ws, tree)
        return _back(lander, card, f"conflict with {base}: {', '.join(conflicts)}", conflicts)
    verify = verify_argv(settings, card)
    if verify:
        env = agent_environment(settings, None, card_id=cid, attempt=card.attempts, task_id="", workdir=tree)
        try:  # the landed result is the agent's code: its verify runs in the sandbox too
            box = card_sandbox(settings, card, verify, workdir=tree, env=env, git_dir=git_common_dir(ws.repo),
                               log=lambda level, msg: lander.line(cid, level, msg))
        except SquadError as exc:
            _drop_tree(ws, tree)
            _cannot_land(lander, cid, f"cannot land: {exc}")
            return None
        try:
            checked = run_verify(verify, cwd=tree, env=env, timeout_s=settings.workspace.verify_timeout,
                                 on_line=lambda level, msg: lander.output(cid, level, msg),
                                 stop=lambda: "train lost" if lease.lost.is_set() else None, sandbox=box)
        finally:
            box.close()
            lander.flush(cid)
        if run is not None:
            store.set_run_landing(run.id, verify_exit=checked.exit_code, verify_output=checked.output)
        if not checked.passed:
            _drop_tree(ws, tree)
            if lease.lost.is_set():
                return None
            return _back(lander, card, f"{checked.error} on the landed result", [])
    if lease.lost.is_set() or store.get_card(cid).status != Status.LANDING:  # taken over, or cancelled
        _drop_tree(ws, tree)
        return None
    if run is not None:  # written before base moves: a lander killed in between is finished by the next
        store.set_run_landing(run.id, landed_commit=result)
    try:
        if ws.remote:
            push_branch(ws.repo, ws.remote, base, result, target=base)
        else:
            git(["update-ref", "-m", f"squad: land {cid}", f"refs/heads/{base}", result, base_commit], ws.repo)
    except WorkspaceError as exc:
        _drop_tree(ws, tree)
        lander.line(cid, "WARNING", f"base {base} moved meanwhile; landing again: {exc}")
        return None
    _drop_tree(ws, tree)
    return _done(lander, card, ws, run.id if run else None, result, resumed=False)


def _cannot_land(lander: Lander, card_id: str, error: str) -> None:
    """The card stays LANDING for `error`: on the card, and one line when the reason is new (a pass
    every fraction of a second would otherwise repeat it on the log)."""
    if lander.store.note_landing(card_id, error):
        lander.line(card_id, "ERROR", error)


def _apply(mode: str, tree: Path, card: Card, ws: Workspace, head: str, base_commit: str) -> tuple[str, list[str]]:
    """Apply the card's branch on base in the landing worktree: (the result commit, conflicted files)."""
    message = f"squad: land {card.card_id}: {card.title}"[:200]
    env = identity_env(ws.repo)
    try:
        if mode == "rebase":
            git(["checkout", "--quiet", "--detach", head], tree)
            git(["rebase", "--quiet", base_commit], tree, env=env)
        elif mode == "squash":
            git(["merge", "--squash", "--quiet", head], tree, env=env)
            git(["commit", "--quiet", "--no-verify", "--allow-empty", "-m", message], tree, env=env)
        else:
            git(["merge", "--no-ff", "--no-verify", "--quiet", "-m", message, head], tree, env=env)
    except WorkspaceError:
        files = conflicted_files(tree)
        if not files:
            raise
        return "", files
    return git(["rev-parse", "HEAD"], tree).strip(), []


def _back(lander: Lander, card: Card, error: str, conflicts: list[str]) -> Status | None:
    """Back to the card's agent (a new attempt counted like a retry), or FAILED once retries are spent."""
    new = lander.store.landing_back(card.card_id, error, conflicts, RetryPolicy.for_card(lander.settings, card))
    if new is not None:
        then = "failed" if new == Status.FAILED else "back to its agent"
        lander.line(card.card_id, "ERROR", f"landing: {error}; {then}")
        lander.status(card.card_id, new, error)
    return new


def _done(lander: Lander, card: Card, ws: Workspace, run_id: int | None, landed_commit: str, *,
          resumed: bool) -> Status | None:
    """Base holds the card's work: its worktree goes, the branch stays (deleted on the remote with
    `delete_landed_branch`), the `after_land` hook runs, then the card is DONE (last: a process that
    ends once every card settled has done the rest by then; a lander killed before it is finished by
    the next one, which runs the hook again)."""
    settings, store, cid = lander.settings, lander.store, card.card_id
    if run_id is not None:
        store.set_run_landing(run_id, landed_commit=landed_commit)
    found = " (found on base)" if resumed else ""
    lander.line(cid, "INFO", f"landed {landed_commit[:12]} on {base_branch(ws)}{found}")
    try:
        remove(settings, ws, store.save_patch, guard=lambda: store.get_card(cid).status != Status.IN_PROGRESS)
        if ws.remote and settings.workspace.delete_landed_branch:
            delete_remote_branch(ws.repo, ws.remote, ws.branch)
    except SquadError as exc:
        lander.line(cid, "WARNING", f"after landing: {exc}")
    hook = settings.workspace.after_land
    if hook:
        _after_land(lander, card, ws, landed_commit, hook)
    if not store.landed(cid):
        return None
    lander.status(cid, Status.DONE)
    return Status.DONE


def _after_land(lander: Lander, card: Card, ws: Workspace, landed_commit: str, hook: list[str]) -> None:
    """The `after_land` hook, in a worktree of the landed commit (detached, removed afterwards) and the
    card's sandbox: that worktree and the repository's git dir writable, so `git` works there (a
    push goes out only as far as the sandbox's network and `rw_paths` let it, docs/security.md).
    Its failure is logged on the card and never undoes the landing."""
    settings, cid = lander.settings, card.card_id
    argv = expand_argv(hook, {"branch": ws.branch, "landed_commit": landed_commit, "card_id": cid})
    tree = _landing_tree(settings, ws)
    try:
        _drop_tree(ws, tree)
        with repo_lock(ws.repo):
            tree.parent.mkdir(parents=True, exist_ok=True)
            git(["worktree", "add", "--detach", "--quiet", str(tree), landed_commit], ws.repo)
    except (SquadError, OSError) as exc:
        _drop_tree(ws, tree)
        lander.line(cid, "ERROR", f"hook after_land not run: cannot check out {landed_commit[:12]}: {exc}")
        return
    try:
        env = agent_environment(settings, None, card_id=cid, attempt=card.attempts, task_id="", workdir=tree)
        box = card_sandbox(settings, card, argv, workdir=tree, env=env, git_dir=git_common_dir(ws.repo),
                           log=lambda level, msg: lander.line(cid, level, msg))
        try:
            run_hook("after_land", argv, cwd=tree, env=env, timeout_s=settings.workspace.hook_timeout,
                     on_line=lambda level, msg: lander.output(cid, level, msg), sandbox=box)
        finally:
            box.close()
            lander.flush(cid)
    except SquadError as exc:
        lander.line(cid, "ERROR", f"hook after_land not run: {exc}")
    finally:
        _drop_tree(ws, tree)
