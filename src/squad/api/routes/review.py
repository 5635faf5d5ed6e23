"""Review gate and workspaces: a card's diff, approve (REVIEW → DONE), reject (REVIEW → QUEUED), land."""

from __future__ import annotations

from dataclasses import replace

from anyio import to_thread
from fastapi import APIRouter

from squad.actions.review import approve_card, card_diff, reject_card, start_landing
from squad.api.deps import Authorized, CardIdDep, StateDep
from squad.api.schemas import DiffOut, FileStatOut, RejectIn, ReviewOut, error_responses
from squad.attempt.workspaces import WorkspaceInfo, list_workspaces

router = APIRouter(tags=["review"])


@router.get("/api/cards/{card_id}/diff", response_model=DiffOut, responses=error_responses(404))
async def diff(card_id: CardIdDep, state: StateDep) -> DiffOut:
    """What the card's branch changed since its base: per-file stat and the patch (capped)."""
    d = await to_thread.run_sync(lambda: card_diff(state.settings, state.store, card_id))
    return DiffOut(branch=d.branch, base_commit=d.base_commit, head_commit=d.head_commit, patch=d.patch,
                   truncated=d.truncated,
                   files=[FileStatOut(path=f.path, insertions=f.insertions, deletions=f.deletions) for f in d.files])


@router.post("/api/cards/{card_id}/approve", response_model=ReviewOut, dependencies=[Authorized],
             responses=error_responses(401, 404, 409))
def approve(card_id: CardIdDep, state: StateDep) -> ReviewOut:
    """REVIEW → DONE; dependants are released. 409 when the card is not in REVIEW or the
    `after_approve` hook failed (the card then stays in REVIEW with the error in `last_error`)."""
    card = approve_card(state.producers.get(), card_id)
    return ReviewOut(status="approved", card_id=card_id, message=f"card {card_id} approved", card=card)


@router.post("/api/cards/{card_id}/land", response_model=ReviewOut, dependencies=[Authorized],
             responses=error_responses(401, 404, 409))
def land(card_id: CardIdDep, state: StateDep) -> ReviewOut:
    """A DONE or REVIEW card joins its repository's merge train (→ LANDING); the orchestrator lands it.
    409 when the card is in another status or has no branch to land."""
    card = start_landing(state.producers.get(), card_id)
    return ReviewOut(status="landing", card_id=card_id, message=f"card {card_id} is landing", card=card)


@router.post("/api/cards/{card_id}/reject", response_model=ReviewOut, dependencies=[Authorized],
             responses=error_responses(401, 404, 409, 422))
def reject(card_id: CardIdDep, body: RejectIn, state: StateDep) -> ReviewOut:
    """REVIEW → QUEUED: a new attempt in the same worktree, with `feedback` in its prompt."""
    producer = state.producers.get()
    task_id = reject_card(producer, card_id, body.feedback)
    return ReviewOut(status="rejected", card_id=card_id, task_id=task_id, card=producer.store.get_card(card_id),
                     message=f"card {card_id} rejected: queued again as task {task_id}")


@router.get("/api/workspaces", response_model=list[WorkspaceInfo], responses=error_responses())
async def workspaces(state: StateDep) -> list[WorkspaceInfo]:
    """Card worktrees on this machine with size on disk, age and whether they hold uncommitted work."""
    infos = await to_thread.run_sync(list_workspaces, state.settings)
    cards = await to_thread.run_sync(state.store.get_cards, [i.card_id for i in infos])
    return [replace(i, status=cards[i.card_id].status.value if i.card_id in cards else None) for i in infos]
