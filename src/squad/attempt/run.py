"""run_card(): the steps of one attempt, shared by the Celery task and the local executor.

An attempt is: claim the card (compare-and-set with a lease) → select agent → build prompt →
run hooks → run the agent under its limits → archive the log → record the run and the new status.
Cross-cutting pieces (lease heartbeat, log batching, progress throttling) are small objects the
attempt runs through, not branches inside it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import structlog
from sqlalchemy.exc import DBAPIError

from squad.agents.parsers import ProgressParser, make_parser, valid_session_id
from squad.agents.presets import agent_for
from squad.agents.prompts import prompt_path, remove_prompt_file, render_prompt
from squad.agents.runner import AgentResult, Limits, build_command, run_agent
from squad.agents.sandbox import Sandbox, for_attempt
from squad.attempt.agent_env import agent_environment
from squad.attempt.archive import LogArchive, disk_full_outcome
from squad.attempt.channel import AttemptChannel
from squad.attempt.confinement import WorkdirEscape, resolve_workdir
from squad.attempt.hooks import run_hook
from squad.attempt.landing import land_ready
from squad.attempt.lease import LeaseKeeper
from squad.attempt.subcards import settle
from squad.attempt.verify import run_verify, verify_argv
from squad.attempt.workspaces import (
    DependenciesConflict,
    ForeignGitDir,
    Workspace,
    WorkspaceError,
    base_tip,
    commit_all,
    facts,
    files_with_markers,
    git_common_dir,
    land_mode,
    lands_when_done,
    merge_base_into,
    prepare,
    push_branch,
    remove,
    review_enabled,
    workspace_for,
)
from squad.attempt.workspaces import should_remove as workspace_should_remove
from squad.channel.wire import DIR_ENV
from squad.core.cards import Card, Run
from squad.core.constants import (
    LOG_EVENTS_PER_BATCH,
    LOG_FLUSH_INTERVAL_S,
    LOG_FLUSH_LINES,
    PROGRESS_MIN_INTERVAL_S,
    STEP_DONE,
    STEP_EXECUTING,
    STEP_IN_PROGRESS,
    STEP_LOADING,
    STEP_PROMPT,
    STEP_SELECTING,
    STEP_STARTING,
    STORE_PROGRESS_INTERVAL_S,
)
from squad.core.errors import SquadError
from squad.core.retries import RetryPolicy
from squad.core.settings import AgentConfig, Settings
from squad.core.statuses import FINAL, Status
from squad.live.events import Event, EventBus, format_log_line, iso_now, log_event, progress_event, status_event
from squad.store.card_store import CardStore, Claim, RunOutcome
from squad.store.db_retry import is_disk_full, retry_db

log = structlog.get_logger(__name__)
ProgressHook = Callable[[int, str, float], None]


@dataclass
class AttemptContext:
    """What an attempt needs from its host (Celery worker or local executor)."""

    settings: Settings
    store: CardStore
    events: EventBus | None = None
    worker: str = "local"
    on_progress: ProgressHook | None = None  # e.g. Celery PROGRESS state
    shutdown: threading.Event | None = None  # set when the host stops: running agents are ended


def card_workdir(settings: Settings, card: Card) -> Path:
    """The card's working directory, symlinks resolved: its own `workdir` (relative to `SQUAD_WORKDIR`),
    else `SQUAD_WORKDIR/<card_id>`; WorkdirEscape when it lies outside every allowed root."""
    return resolve_workdir(settings, card.card_id, card.workdir)


class Reporter:
    """Batches log lines and throttles progress for one attempt; also keeps the archive."""

    def __init__(self, ctx: AttemptContext, card_id: str, task_id: str, token: str) -> None:
        self.ctx = ctx
        self.card_id = card_id
        self.task_id = task_id
        self.token = token
        self.started = time.monotonic()
        self.seq = 0
        self.archive = LogArchive()
        self.pending: list[tuple[str, str, str]] = []
        self.pending_events: list[dict[str, str]] = []
        self.held: list[tuple[str, str, str]] = []  # lines of a batch closed by `hold`, not sent yet
        self.last_flush = time.monotonic()
        self.progress = 0
        self.step = ""
        self.last_progress_emit = 0.0
        self.last_store_write = time.monotonic()
        self.lock = threading.Lock()
        # Set once another attempt owns the card (the sweeper closed this run as `lost`): from then
        # on nothing of this attempt reaches the live log or the event stream (fencing).
        self.fenced = threading.Event()

    def _event_id(self) -> str:
        self.seq += 1
        return f"{self.token}:{self.seq}"

    def _live(self) -> bool:
        """Whether this attempt's events still go out (there is Redis, and the claim is still ours)."""
        return self.ctx.events is not None and not self.fenced.is_set()

    def status(self, status: Status, *, attempt: int, worker: str | None = None, error: str | None = None,
               at_once: bool = True) -> None:
        """Queue a status event after the lines and events still pending; send them now (`at_once`)
        or with the next log batch."""
        if not self._live():
            return
        ev = status_event(self.card_id, status, self.task_id, attempt=attempt, worker=worker, error=error,
                          event_id=self._event_id())
        with self.lock:
            self.pending_events.append(ev)
        if at_once:
            self.flush()

    def event(self, event: Event) -> None:
        """Send one event (a question, an answer, a note) after the lines and events still pending."""
        if not self._live():
            return
        with self.lock:
            self.pending_events.append(event)
        self.flush()

    def line(self, level: str, message: str) -> None:
        """One agent (or system) log line."""
        ts = iso_now()
        entry = format_log_line(ts, level, message)
        with self.lock:
            self.archive.add(entry)
            if self.ctx.events is not None:
                self.pending.append((ts, level, message))
                due = (len(self.pending) >= LOG_FLUSH_LINES
                       or time.monotonic() - self.last_flush >= LOG_FLUSH_INTERVAL_S)
            else:
                due = False
        if due:
            self.flush()

    def set_progress(self, progress: int, step: str, *, force: bool = False, send: bool = True) -> None:
        """Record progress: always on a step change, otherwise at most every few seconds; 100 % is sent
        at once unless `send` is False (the caller flushes it with what follows)."""
        now = time.monotonic()
        changed = step != self.step
        self.progress, self.step = progress, step
        if not (force or changed or now - self.last_progress_emit >= PROGRESS_MIN_INTERVAL_S):
            return
        self.last_progress_emit = now
        elapsed = round(now - self.started, 2)
        # The store gets progress at most once a second (the live view comes from the events):
        # the fixed steps of a short card would otherwise cost seven write transactions.
        if now - self.last_store_write >= STORE_PROGRESS_INTERVAL_S and not self.fenced.is_set():
            self.last_store_write = now
            try:
                self.ctx.store.set_progress(self.card_id, self.token, progress, step)
            except Exception as exc:  # progress is best effort: the store may be briefly locked
                log.warning("progress not stored", card_id=self.card_id, error=str(exc))
        if self._live():  # the event leaves with the next log batch
            ev = progress_event(self.card_id, self.task_id, progress=progress, current_step=step, elapsed=elapsed,
                                worker=self.ctx.worker, event_id=self._event_id())
            with self.lock:
                self.pending_events.append(ev)
        if self.ctx.on_progress is not None:
            self.ctx.on_progress(progress, step, elapsed)
        # Events leave with the next batch (at most LOG_FLUSH_INTERVAL_S later), in order.
        if (progress >= 100 and send) or time.monotonic() - self.last_flush >= LOG_FLUSH_INTERVAL_S:
            self.flush()

    def _batch(self) -> tuple[list[tuple[str, str, str]], list[dict[str, str]]]:
        """Take the pending batch: its lines, and its events followed by the lines' log events."""
        with self.lock:
            lines, self.pending = self.pending, []
            events, self.pending_events = self.pending_events, []
            self.last_flush = time.monotonic()
        if lines:
            # The shared, capped event stream gets at most LOG_EVENTS_PER_BATCH lines per batch: a
            # chatty agent must not evict every other card's events. The card's own log stream
            # (task:logs:<id>) always gets every line.
            for ts, level, message in lines[:LOG_EVENTS_PER_BATCH]:
                events.append(log_event(self.card_id, self.task_id, level=level, message=message, timestamp=ts,
                                        event_id=self._event_id()))
            if len(lines) > LOG_EVENTS_PER_BATCH:
                more = len(lines) - LOG_EVENTS_PER_BATCH
                events.append(log_event(self.card_id, self.task_id, level="INFO",
                                        message=f"[{more} more lines in the card's log]", skipped=more,
                                        event_id=self._event_id()))
        return lines, events

    def hold(self) -> None:
        """Close the pending batch without sending it: it leaves with the next `flush`, ahead of (and
        in one pipeline with) whatever is queued after it, in the order a flush now would send it."""
        if self.ctx.events is None:
            return
        lines, events = self._batch()
        with self.lock:
            self.held += lines
            self.pending_events = events + self.pending_events

    def flush(self) -> None:
        """Send pending log lines and events in one pipeline."""
        if self.ctx.events is None:
            return
        with self.lock:
            held, self.held = self.held, []
        lines, events = self._batch()
        lines = held + lines
        if self.fenced.is_set():
            return
        if lines:
            self.ctx.events.append_logs(self.card_id, self.task_id, lines, events)
        elif events:
            self.ctx.events.publish_many(events)

    def archived_log(self) -> str:
        """The attempt's log as text (head and tail when it outgrew the archive cap)."""
        return self.archive.text()


class _Observer:
    """Bridges the runner's callbacks to the reporter, the lease and the agents' channel (whose waits
    for a person stop the runner's clocks)."""

    def __init__(self, reporter: Reporter, lease: LeaseKeeper, channel: AttemptChannel) -> None:
        self.reporter, self.lease, self.channel = reporter, lease, channel

    def paused_s(self) -> float:
        return self.channel.paused_s()

    def active_at(self) -> float:
        return self.channel.active_at()

    def on_line(self, level: str, message: str) -> None:
        self.reporter.line(level, message)

    def on_progress(self, progress: int, step: str) -> None:
        self.reporter.set_progress(progress, step)

    def stop_reason(self) -> str | None:
        if time.monotonic() - self.reporter.last_flush >= LOG_FLUSH_INTERVAL_S:
            self.reporter.flush()
        return self.lease.stop_reason()


def run_card(ctx: AttemptContext, card_id: str, task_id: str) -> Status | None:
    """Run one attempt of a card for the message `task_id`.

    Returns the card's new status, or None when this message could not claim the card (a
    duplicate or stale delivery, or a card no longer QUEUED): then nothing ran.
    """
    settings, store = ctx.settings, ctx.store
    claim = retry_db(lambda: store.claim(card_id, task_id, ctx.worker, settings.lease_s), what="claim")
    if claim is None:
        log.info("message could not claim card; nothing to do", card_id=card_id, task_id=task_id)
        return None
    structlog.contextvars.bind_contextvars(attempt=claim.attempt)
    log.info("attempt started")
    reporter = Reporter(ctx, card_id, task_id, claim.token)
    # The lease is renewed from the claim until `finish`: reporting progress can block for as long as
    # a Redis outage lasts, and a lease left to expire meanwhile would have the card run twice.
    with LeaseKeeper(store, card_id, claim.token, settings.lease_s, ctx.shutdown, run_id=claim.run_id,
                     fenced=reporter.fenced) as lease:
        # IN_PROGRESS leaves with the attempt's first batch (at most LOG_FLUSH_INTERVAL_S or one cancel
        # poll later), not in a round trip of its own. Nothing waits on it: the store already says
        # IN_PROGRESS. A short attempt sends one pipeline in all: its batch and its final status.
        reporter.status(Status.IN_PROGRESS, attempt=claim.attempt, worker=ctx.worker, at_once=False)
        for progress, step in (STEP_LOADING, STEP_SELECTING, STEP_IN_PROGRESS):
            reporter.set_progress(progress, step, force=True)
        outcome, ws = _attempt(ctx, claim, reporter, lease)
        reporter.line("INFO" if outcome.succeeded else "ERROR",
                      "attempt succeeded" if outcome.succeeded else f"attempt failed: {outcome.error}")
        if outcome.succeeded:
            reporter.set_progress(*STEP_DONE, force=True, send=False)
        # The last batch is closed but not sent here: it leaves after `finish`, in one pipeline with
        # the new status, which follows it in the stream as before. The run's archive already holds
        # every line; a fenced attempt's batch is dropped, as everything it sends after that.
        reporter.hold()
        outcome = replace(outcome, log=reporter.archived_log())
        policy = RetryPolicy.for_card(settings, claim.card)
        review = review_enabled(settings, claim.card)
        land = ws is not None and lands_when_done(settings, claim.card)
        # A database restart or a lock held past the busy timeout must not lose the outcome: retried
        # with backoff (bounded) while the lease keeper goes on renewing the claim.
        try:
            try:
                new = retry_db(lambda: store.finish(claim, outcome, policy, review=review, land=land),
                               what="finish")
            except DBAPIError as exc:
                if not is_disk_full(exc):
                    raise
                # No room for the outcome and its archive: record a failed attempt with a short log,
                # so the card is retried once there is room again, instead of staying claimed.
                outcome = disk_full_outcome(outcome, exc)
                reporter.line("ERROR", f"attempt failed: {outcome.error}")
                new = retry_db(lambda: store.finish(claim, outcome, policy, review=review, land=land),
                               what="finish (disk full)")
        except BaseException:
            reporter.flush()  # the live log keeps the last lines (the sweeper archives it into the run)
            raise
    if new is None and reporter.fenced.is_set():
        log.warning("attempt fenced: its lease was lost and the card taken over; outcome dropped",
                    card_id=card_id, run_id=claim.run_id)
    if new is not None:
        reporter.status(new, attempt=claim.attempt, error=outcome.error)
    reporter.flush()
    if new is not None:
        _settle_family(ctx, claim.card, new)
    if ws is not None:
        _cleanup(ctx, ws, new)
    if new == Status.LANDING:  # this worker lands what its train holds (the card among them)
        land_ready(settings, store, ctx.events, ctx.worker)
    return new


def _settle_family(ctx: AttemptContext, card: Card, new: Status) -> None:
    """A parent that now waits may already be settled (its sub-cards ended first); a sub-card that
    ended for good may settle its parent (docs/agents.md "Sub-cards")."""
    try:
        if new == Status.WAITING:
            settle(ctx.store, ctx.events, card.card_id)
        elif new in FINAL and card.parent:
            settle(ctx.store, ctx.events, card.parent)
    except Exception as exc:  # the orchestrator's pass settles it later
        log.warning("parent not settled", card_id=card.card_id, error=str(exc))


def _cleanup(ctx: AttemptContext, ws: Workspace, new: Status | None) -> None:
    """After the attempt: DONE/CANCELLED worktrees go (branch kept), failures follow `keep`."""
    store = ctx.store
    status = new
    if status is None:  # the claim was taken away: cancelled, or a forced retry
        try:
            status = store.get_card(ws.card_id).status
        except SquadError:
            return
    if not workspace_should_remove(ctx.settings, status):
        return
    try:
        remove(ctx.settings, ws, store.save_patch,
               guard=lambda: store.get_card(ws.card_id).status != Status.IN_PROGRESS)
    except SquadError as exc:
        log.warning("worktree not removed", card_id=ws.card_id, error=str(exc))


def _attempt(ctx: AttemptContext, claim: Claim, reporter: Reporter,
             lease: LeaseKeeper) -> tuple[RunOutcome, Workspace | None]:
    settings, card = ctx.settings, claim.card
    try:
        agent_name, agent = agent_for(settings, card.agent, card.squad)
        parser = make_parser(agent.parser)
        reporter.set_progress(*STEP_PROMPT, force=True)
        last_error = card.last_error if claim.attempt > 1 else None
        # A first attempt has no earlier runs (runs are only opened by a claim): two queries saved.
        earlier = [] if claim.attempt == 1 else [r for r in ctx.store.list_runs(card.card_id) if r.id != claim.run_id]
        previous = [_run_summary(r) for r in earlier]
        ws = workspace_for(settings, card)
    except SquadError as exc:
        return RunOutcome(succeeded=False, error=str(exc), retryable=False), None
    base_commit = ""
    conflicts: list[str] = []
    if ws is not None:
        try:
            created, base_commit = prepare(settings, ws, _dependency_branches(ctx, card, ws))
            if card.conflicts is not None:  # its landing conflicted or failed verify: merge base first
                conflicts = merge_base_into(ws, base_tip(ws))
                reporter.line("INFO", f"merged the current base into {ws.branch}"
                              + (f": conflicts in {', '.join(conflicts)}" if conflicts else " cleanly"))
        except DependenciesConflict:
            reporter.line("ERROR", "dependencies conflict")
            return RunOutcome(succeeded=False, error="dependencies conflict", retryable=False), None
        except SquadError as exc:
            reporter.line("ERROR", f"workspace: {exc}")
            return RunOutcome(succeeded=False, error=f"workspace: {exc}"), None
        workdir = ws.path
        reporter.line("INFO", f"workspace {ws.path} on branch {ws.branch}" + (" (created)" if created else " (reused)"))
    else:
        try:
            workdir = card_workdir(settings, card)
            created = not workdir.exists()
            workdir.mkdir(parents=True, exist_ok=True)
            workdir = card_workdir(settings, card)  # again: mkdir followed whatever links exist by now
        except WorkdirEscape as exc:
            return RunOutcome(succeeded=False, error=f"workdir refused: {exc}", retryable=False), None
        except OSError as exc:
            return RunOutcome(succeeded=False, error=f"cannot create workdir: {exc.strerror or exc}"), None
    try:
        prompt = render_prompt(settings.prompt_template, card.model_dump(mode="json"), claim.attempt, last_error,
                               feedback=card.feedback or "", previous_runs=previous,
                               verify_output=_failed_verify_output(earlier), conflicts=conflicts)
    except SquadError as exc:
        return RunOutcome(succeeded=False, error=str(exc), retryable=False), ws
    env = agent_environment(settings, agent, card_id=card.card_id, attempt=claim.attempt,
                            task_id=reporter.task_id, workdir=workdir)
    prompt_file = prompt_path(settings.workdir, card.card_id, claim.attempt)
    try:
        box = for_attempt(settings, agent, workdir=workdir, env=env, prompt_file=prompt_file,
                          git_dir=git_common_dir(ws.repo) if ws is not None else None, log=reporter.line)
    except SquadError as exc:
        reporter.line("ERROR", str(exc))
        return RunOutcome(succeeded=False, error=str(exc), retryable=False, sandbox="none"), ws
    reporter.line("INFO", f"sandbox: {box.description}")
    try:
        outcome, ws = _attempt_in(ctx, claim, reporter, lease, _Prepared(
            agent_name, agent, parser, prompt, ws, workdir, created, base_commit, env, prompt_file, box, conflicts))
    finally:
        box.close()
    return replace(outcome, sandbox=box.description), ws


@dataclass
class _Prepared:
    """What an attempt has set up before its hooks and agent run."""

    agent_name: str
    agent: AgentConfig
    parser: ProgressParser
    prompt: str
    ws: Workspace | None
    workdir: Path
    created: bool
    base_commit: str
    env: dict[str, str]
    prompt_file: Path
    sandbox: Sandbox
    conflicts: list[str]


def _attempt_in(ctx: AttemptContext, claim: Claim, reporter: Reporter, lease: LeaseKeeper,
                p: _Prepared) -> tuple[RunOutcome, Workspace | None]:
    """Hooks and agent, inside the attempt's sandbox."""
    settings, card = ctx.settings, claim.card
    agent_name, agent, parser, prompt, ws, workdir = p.agent_name, p.agent, p.parser, p.prompt, p.ws, p.workdir
    created, base_commit, env, prompt_file, conflicts = p.created, p.base_commit, p.env, p.prompt_file, p.conflicts
    hooks = settings.hooks

    def hook(name: str, argv: list[str] | None) -> str | None:
        return run_hook(name, argv, cwd=workdir, env=env, timeout_s=hooks.timeout, on_line=reporter.line,
                        sandbox=p.sandbox)

    if created:
        hook("after_create", hooks.after_create)
    if err := hook("before_run", hooks.before_run):
        return RunOutcome(succeeded=False, error=err), ws
    reporter.set_progress(*STEP_STARTING, force=True)
    argv, stdin_data = build_command(
        agent, agent_name=agent_name, card_id=card.card_id, workdir=workdir, attempt=claim.attempt,
        prompt=prompt, prompt_file=prompt_file,
        resume_session_id=valid_session_id(claim.previous_session_id) if claim.attempt > 1 else None,
        keep_prompt=settings.keep_prompts)
    reporter.line("INFO", f"starting agent {agent_name}: {argv[0]} (attempt {claim.attempt}, worker {ctx.worker})")
    reporter.set_progress(*STEP_EXECUTING, force=True)
    own = settings.limits_for(card)
    limits = Limits(soft_time_limit_s=own.soft_time_limit_s, time_limit_s=own.time_limit_s,
                    stall_timeout_s=settings.stall_timeout)
    channel = AttemptChannel(settings, ctx.store, ctx.events, claim, task_id=reporter.task_id, line=reporter.line,
                             progress=reporter.set_progress, event=reporter.event, fenced=reporter.fenced)
    try:
        talk_back = channel.open()
        # the agent's `squad mcp` reaches its socket from inside (the agent's run only: it goes after)
        box = p.sandbox.with_bind(talk_back[DIR_ENV]) if DIR_ENV in talk_back else p.sandbox
        result = run_agent(argv, cwd=workdir, env={**env, **talk_back}, stdin_data=stdin_data, parser=parser,
                           limits=limits, observer=_Observer(reporter, lease, channel), rlimits=agent.rlimits,
                           sandbox=box)
    finally:
        channel.close()
        if not settings.keep_prompts:
            remove_prompt_file(prompt_file)
    if result.outcome == "succeeded" and settings.keep_prompts:  # kept for failed attempts only
        remove_prompt_file(prompt_file)
    if lease.fenced.is_set():  # another attempt owns the workdir now: hands off
        return outcome_of(result), None
    hook("after_run", hooks.after_run)
    outcome = outcome_of(result)
    if ws is None:
        return outcome, None
    if outcome.succeeded and (left := _markers_left(ws, conflicts, reporter)):
        outcome = replace(outcome, succeeded=False, error="unresolved conflict")
        reporter.line("ERROR", f"unresolved conflict: markers left in {', '.join(left)}")
    outcome = _record_git(ctx, ws, base_commit, claim, outcome, reporter)
    verify = verify_argv(settings, card)
    if outcome.succeeded and verify and not lease.fenced.is_set():
        checked = run_verify(verify, cwd=workdir, env=env, timeout_s=settings.workspace.verify_timeout,
                             on_line=reporter.line, stop=lease.stop_reason, sandbox=p.sandbox)
        outcome = replace(outcome, verify_exit=checked.exit_code, verify_output=checked.output,
                          succeeded=checked.passed, error=checked.error,
                          cancelled=checked.error == "cancelled" or outcome.cancelled)
    return outcome, ws


def _dependency_branches(ctx: AttemptContext, card: Card, ws: Workspace) -> list[str]:
    """With `land = none`, the branches of the card's dependencies in the same repository (a new card
    branch starts from them); with landing on, none (the base already holds what they landed)."""
    if not card.depends_on or land_mode(ctx.settings, card) != "none":
        return []
    branches = []
    for dep in ctx.store.get_cards(card.depends_on).values():
        dep_ws = workspace_for(ctx.settings, dep)
        if dep_ws is not None and dep_ws.repo == ws.repo:
            branches.append(dep_ws.branch)
    return branches


def _failed_verify_output(runs: list[Run]) -> str:
    """The output tail of the latest verify, when it failed ('' otherwise): the next prompt shows it."""
    for run in reversed(runs):
        if run.verify_exit is not None or run.verify_output is not None:
            return (run.verify_output or "") if run.verify_exit != 0 else ""
    return ""


def _markers_left(ws: Workspace, conflicts: list[str], reporter: Reporter) -> list[str]:
    """Of the files a merge of base left conflicted, those the agent left with conflict markers."""
    if not conflicts:
        return []
    try:
        return files_with_markers(ws.path, conflicts)
    except WorkspaceError as exc:
        reporter.line("ERROR", f"workspace: {exc}")
        return []


def _record_git(ctx: AttemptContext, ws: Workspace, base_commit: str, claim: Claim, outcome: RunOutcome,
                reporter: Reporter) -> RunOutcome:
    """Commit what the agent left (with `auto_commit`), push the branch to the shared remote (after a
    failed attempt too: its work is not lost) and put the branch's git facts on the run."""
    try:
        if ctx.settings.workspace.auto_commit and commit_all(ws, f"squad: {ws.card_id} attempt {claim.attempt}"):
            reporter.line("INFO", f"committed the agent's changes on {ws.branch}")
        git_facts = facts(ws, base_commit)
        if ws.remote:
            push_branch(ws.repo, ws.remote, ws.branch)
            reporter.line("INFO", f"pushed {ws.branch} to {ws.remote}")
    except ForeignGitDir as exc:  # the agent redirected git (review gate bypass): the attempt fails
        reporter.line("ERROR", f"workspace: {exc}")
        return replace(outcome, succeeded=False, error=f"workspace: {exc}", retryable=False)
    except WorkspaceError as exc:
        reporter.line("ERROR", f"workspace: {exc}")
        return outcome
    reporter.line("INFO", f"{ws.branch}: {git_facts.files_changed} file(s) changed, +{git_facts.insertions} "
                          f"-{git_facts.deletions} since {git_facts.base_commit[:12]}")
    return replace(outcome, git=git_facts)


def _run_summary(run: Run) -> dict[str, object]:
    """What a prompt template sees of an earlier attempt."""
    return {"attempt": run.attempt, "status": run.status, "error": run.error, "exit_code": run.exit_code,
            "branch": run.branch, "head_commit": run.head_commit, "files_changed": run.files_changed,
            "insertions": run.insertions, "deletions": run.deletions}


def outcome_of(result: AgentResult) -> RunOutcome:
    """Map the runner's result to what the run row records."""
    return RunOutcome(
        succeeded=result.outcome == "succeeded", error=result.error, exit_code=result.exit_code, usage=result.usage,
        cancelled=result.outcome == "cancelled", retryable=result.outcome != "spawn_failed",
    )


