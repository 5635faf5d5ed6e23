"""The review gate: a card's diff, approval (REVIEW → DONE) and rejection (REVIEW → QUEUED).

Shared by the CLI (`squad review …`) and the API (`/api/cards/{id}/diff|approve|reject`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import structlog

from squad.agents.sandbox import effective_kind
from squad.attempt.agent_env import agent_environment, settings_secrets
from squad.attempt.confinement import resolve_workdir
from squad.attempt.hooks import card_sandbox, card_sandbox_config, run_hook
from squad.attempt.landing import land_ready
from squad.attempt.workspaces import (
    FileStat,
    WorkspaceError,
    check_worktree_path,
    confined_repo,
    git,
    git_common_dir,
    land_mode,
    numstat,
    remove,
    workspace_for,
)
from squad.core.cards import Card
from squad.core.errors import ConflictError, NotFoundError, SquadError
from squad.core.masking import mask_text
from squad.core.settings import Settings
from squad.core.statuses import Status
from squad.orchestration.dispatch import Producer
from squad.store.card_store import CardStore

log = structlog.get_logger(__name__)

#: the diff's patch is cut here (a marker says how much was left out)
PATCH_MAX_BYTES = 512 * 1024
HOOK_OUTPUT_MAX_CHARS = 2000
FEEDBACK_MAX_CHARS = 20_000


class NotInReview(ConflictError):
    """Approve/reject of a card that is not in REVIEW (HTTP 409)."""


class ApprovalHookFailed(SquadError):
    """`after_approve` failed: the card stays in REVIEW with the error shown."""

    exit_code = 1
    http_status = 409


@dataclass
class CardDiff:
    """`GET /api/cards/{id}/diff`: what the card's branch changed since its base."""

    branch: str
    base_commit: str
    head_commit: str
    files: list[FileStat] = field(default_factory=list)
    patch: str = ""
    truncated: bool = False


def _repo_of(settings: Settings, card: Card) -> Path:
    raw = card.repo or (str(settings.workspace.repo) if settings.workspace.repo else None)
    if not raw:
        raise NotFoundError(f"card {card.card_id} has no workspace (no repository configured)")
    return confined_repo(settings, raw)


def card_diff(settings: Settings, store: CardStore, card_id: str, *, with_patch: bool = True,
              max_bytes: int = PATCH_MAX_BYTES) -> CardDiff:
    """Diff stat and patch of `base…branch` of the card's latest workspace run."""
    card = store.get_card(card_id)
    run = store.latest_workspace_run(card_id)
    if run is None or not run.branch or not run.base_commit:
        raise NotFoundError(f"card {card_id} has no workspace run yet")
    repo = _repo_of(settings, card)
    tip = git(["rev-parse", "--verify", "--quiet", f"refs/heads/{run.branch}"], repo, check=False).strip()
    head = tip or run.head_commit or run.base_commit
    try:
        files = numstat(repo, run.base_commit, head)
        patch = git(["diff", "--no-color", f"{run.base_commit}...{head}"], repo) if with_patch else ""
    except WorkspaceError as exc:
        raise NotFoundError(f"card {card_id}: its branch cannot be read: {exc}") from None
    truncated = False
    data = patch.encode("utf-8", "replace")
    if len(data) > max_bytes:
        truncated = True
        patch = data[:max_bytes].decode("utf-8", "ignore")
        patch += f"\n[patch truncated: {max_bytes} of {len(data)} bytes shown]\n"
    return CardDiff(branch=run.branch, base_commit=run.base_commit, head_commit=head, files=files, patch=patch,
                    truncated=truncated)


def _require_review(store: CardStore, card_id: str) -> Card:
    card = store.get_card(card_id)
    if card.status != Status.REVIEW:
        raise NotInReview(f"card {card_id} is {card.status.value}, not REVIEW")
    return card


def _run_after_approve(settings: Settings, card: Card) -> None:
    """The optional `[workspace] after_approve` argv (e.g. merge or push), in the card's worktree.

    It runs like every hook (`run_hook`): the agent's scrubbed environment, its own process group
    ended whole at `hook_timeout`, only a bounded tail of its output kept, inside the card's sandbox
    (its worktree and the repository's git dir writable; with the worktree gone, the git dir is its
    folder; without a workspace, the card's own folder); and no secret of ours is copied into the
    error (the 409 and `last_error`)."""
    argv = settings.workspace.after_approve
    if not argv:
        return
    ws = workspace_for(settings, card)
    sandboxed = effective_kind(card_sandbox_config(settings, card)) != "none"
    cwd = Path.cwd()
    git_dir: Path | None = None
    if ws is not None:
        check_worktree_path(ws)
        git_dir = git_common_dir(ws.repo) if sandboxed else None
        cwd = ws.path if ws.path.is_dir() else git_dir or ws.repo
    elif sandboxed:  # never the caller's own folder (it may hold squad.toml and the store)
        cwd = resolve_workdir(settings, card.card_id, card.workdir)
        cwd.mkdir(parents=True, exist_ok=True)
    values = {"card_id": card.card_id, "branch": ws.branch if ws else "", "repo": str(ws.repo) if ws else ""}
    expanded = [item.format_map(_Keep(values)) for item in argv]
    env = agent_environment(settings, None, card_id=card.card_id, attempt=card.attempts,
                            task_id=card.celery_task_id or "", workdir=cwd)
    env["SQUAD_BRANCH"] = values["branch"]
    lines: dict[str, list[str]] = {"INFO": [], "ERROR": []}
    try:
        box = card_sandbox(settings, card, expanded, workdir=cwd, env=env, git_dir=git_dir,
                           log=lambda level, text: lines.setdefault(level, []).append(text))
    except SquadError as exc:
        raise ApprovalHookFailed(f"after_approve not run: {exc}") from None
    try:
        error = run_hook("after_approve", expanded, cwd=cwd, env=env, timeout_s=settings.workspace.hook_timeout,
                         on_line=lambda level, text: lines.setdefault(level, []).append(text), sandbox=box)
    finally:
        box.close()
    if error is None:
        return
    hook_lines = [line.removeprefix("[after_approve] ") for line in lines["ERROR"] or lines["INFO"]
                  if line.startswith("[after_approve] ")]
    tail = _without_secrets(settings, "\n".join(hook_lines).strip())[-HOOK_OUTPUT_MAX_CHARS:]
    raise ApprovalHookFailed(error.replace("hook after_approve", "after_approve") + (f": {tail}" if tail else ""))


def _without_secrets(settings: Settings, text: str) -> str:
    """`text` with every secret value of the settings (and any URL password) shown as `***`."""
    for secret in sorted(settings_secrets(settings), key=len, reverse=True):
        text = text.replace(secret, "***")
    return mask_text(text)


class _Keep(dict[str, str]):
    """format_map values that leave unknown `{placeholders}` as they are."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def approve_card(producer: Producer, card_id: str) -> Card:
    """REVIEW → DONE (after the optional `after_approve` hook); dependants are released next pass.
    With landing on (`land` other than `none`) the card goes LANDING instead: an orchestrator pass or
    `squad land` lands it (docs/workspaces.md "Landing the work")."""
    store, settings = producer.store, producer.settings
    card = _require_review(store, card_id)
    try:
        _run_after_approve(settings, card)
    except ApprovalHookFailed as exc:
        store.note_review_error(card_id, str(exc))
        raise
    if land_mode(settings, card) != "none":
        landing = store.start_landing(card_id, expected=[Status.REVIEW])
        if landing is None:
            raise NotInReview(f"card {card_id} left REVIEW meanwhile")
        producer.status_event(card_id, Status.LANDING, card.celery_task_id, attempt=card.attempts)
        return landing
    approved = store.approve(card_id)
    if approved is None:
        raise NotInReview(f"card {card_id} left REVIEW meanwhile")
    producer.status_event(card_id, Status.DONE, card.celery_task_id, attempt=card.attempts)
    cleanup_local(settings, store, approved)
    return approved


class CannotLand(ConflictError):
    """`squad land` of a card that is neither DONE nor REVIEW nor LANDING (HTTP 409)."""


def start_landing(producer: Producer, card_id: str) -> Card:
    """Put a DONE or approved card into its repository's merge train by hand (→ LANDING); a card already
    LANDING stays so. With `land = none` it lands as `merge`."""
    store = producer.store
    card = store.get_card(card_id)
    if card.status == Status.LANDING:
        return card
    if card.status not in (Status.DONE, Status.REVIEW):
        raise CannotLand(f"card {card_id} is {card.status.value}: only a DONE or REVIEW card can land")
    if workspace_for(producer.settings, card) is None:
        raise CannotLand(f"card {card_id} has no workspace (no repository configured)")
    if store.latest_workspace_run(card_id) is None:
        raise CannotLand(f"card {card_id} has no branch to land (no attempt ran in its workspace)")
    landing = store.start_landing(card_id, expected=[card.status])
    if landing is None:
        raise CannotLand(f"card {card_id} changed status meanwhile; try again")
    producer.status_event(card_id, Status.LANDING, card.celery_task_id, attempt=card.attempts)
    return landing


def land_now(producer: Producer, card_id: str) -> Card:
    """`squad land ID`: into the train, then land what the trains hold from this process (another
    lander may hold the card's train: then it lands it); the card as it is afterwards."""
    start_landing(producer, card_id)
    land_ready(producer.settings, producer.store, producer.events, worker="cli")
    return producer.store.get_card(card_id)


@dataclass
class Evidence:
    """What a reviewer sees of a card's work besides its diff (`squad review show`, the card detail)."""

    status: str
    attempts: int
    cost_usd: float | None
    duration_s: float | None
    verify_exit: int | None
    verify_output: str | None
    landed_commit: str | None
    last_error: str | None
    conflicts: list[str] | None


def card_evidence(store: CardStore, card_id: str) -> Evidence:
    """The latest run's verify exit and output tail, the card's attempts, cost and time spent, and for a
    LANDING or conflicted card what happened."""
    card = store.get_card(card_id)
    runs = store.list_runs(card_id)
    last = runs[-1] if runs else None
    verified = next((r for r in reversed(runs) if r.verify_exit is not None or r.verify_output is not None), None)
    duration = sum((r.ended_at - r.started_at).total_seconds() for r in runs if r.ended_at and r.started_at)
    costs = [r.cost_usd for r in runs if r.cost_usd is not None]
    return Evidence(status=card.status.value, attempts=card.attempts, cost_usd=sum(costs) if costs else None,
                    duration_s=round(duration, 2) if runs else None,
                    verify_exit=verified.verify_exit if verified else None,
                    verify_output=verified.verify_output if verified else None,
                    landed_commit=next((r.landed_commit for r in reversed(runs) if r.landed_commit), None),
                    last_error=card.last_error if last is None or card.status != Status.DONE else None,
                    conflicts=card.conflicts)


def reject_card(producer: Producer, card_id: str, feedback: str) -> str:
    """REVIEW → QUEUED with feedback for the next attempt (same worktree, same branch); the new task id."""
    text = feedback.strip()
    if not text:
        raise SquadError("feedback must not be empty: say what to change")
    if len(text) > FEEDBACK_MAX_CHARS:
        raise SquadError(f"feedback must be at most {FEEDBACK_MAX_CHARS} characters")
    if "\x00" in text:
        raise SquadError("feedback must not contain NUL characters")
    _require_review(producer.store, card_id)
    if not producer.store.set_feedback(card_id, text):
        raise NotInReview(f"card {card_id} left REVIEW meanwhile")
    task_id = producer.send(card_id, expected=[Status.REVIEW], fresh_retries=True)
    if task_id is None:
        raise NotInReview(f"card {card_id} left REVIEW meanwhile")
    return task_id


def cleanup_local(settings: Settings, store: CardStore, card: Card) -> bool:
    """Remove a DONE/CANCELLED card's worktree when it lives on this machine (gc catches the rest)."""
    try:
        ws = workspace_for(settings, card)
    except SquadError:
        return False
    if ws is None or not ws.path.exists() or settings.workspace.keep == "always":
        return False
    try:
        removed, _patch = remove(settings, ws, store.save_patch,
                                 guard=lambda: store.get_card(card.card_id).status != Status.IN_PROGRESS)
        return removed
    except SquadError as exc:
        log.warning("worktree not removed", card_id=card.card_id, error=str(exc))
        return False


def review_cards(store: CardStore) -> list[tuple[Card, dict[str, object]]]:
    """Cards in REVIEW with the size of their change (from their latest workspace run)."""
    out: list[tuple[Card, dict[str, object]]] = []
    for card in store.list_cards(status=Status.REVIEW.value):
        run = store.latest_workspace_run(card.card_id)
        stat: dict[str, object] = {"branch": run.branch if run else None,
                                   "files_changed": run.files_changed if run else None,
                                   "insertions": run.insertions if run else None,
                                   "deletions": run.deletions if run else None}
        out.append((card, stat))
    return out
