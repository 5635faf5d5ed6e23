"""Statuses, the allowed status transitions and the facts of each status, in one table each
(docs/architecture.md "Card lifecycle").

Plain Python, apart from `squad.core.cards`' pydantic models: a command that only needs the names of
the statuses (`squad status`) does not pay for building those models (docs/benchmarks.md "CLI").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from squad.core.errors import TransitionError


class Status(StrEnum):
    """Card status."""

    TODO = "TODO"
    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    DONE = "DONE"
    RETRYING = "RETRYING"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    BLOCKED = "BLOCKED"
    REVIEW = "REVIEW"
    LANDING = "LANDING"
    NEEDS_INPUT = "NEEDS_INPUT"
    WAITING = "WAITING"


class RunStatus(StrEnum):
    """Status of one run (attempt) row: `lost` when the sweeper closed it after its worker
    stopped renewing the lease."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"


S = Status
#: Every allowed status change, in one place. Anything else raises TransitionError.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.TODO: frozenset({S.QUEUED, S.CANCELLED, S.BLOCKED}),
    S.QUEUED: frozenset({S.QUEUED, S.IN_PROGRESS, S.CANCELLED, S.TODO}),
    S.IN_PROGRESS: frozenset({S.DONE, S.REVIEW, S.LANDING, S.RETRYING, S.FAILED, S.CANCELLED, S.QUEUED, S.NEEDS_INPUT,
                              S.WAITING}),
    # The attempt's agent asked a person (`ask_human`): it still holds the claim; back to IN_PROGRESS
    # once answered (or the wait ends); a worker lost meanwhile is swept like a running attempt.
    S.NEEDS_INPUT: frozenset({S.IN_PROGRESS, S.CANCELLED, S.RETRYING, S.FAILED}),
    # The attempt succeeded while sub-cards it created are not DONE: DONE when they all are, FAILED
    # when one fails for good.
    S.WAITING: frozenset({S.DONE, S.FAILED, S.CANCELLED}),
    S.RETRYING: frozenset({S.QUEUED, S.CANCELLED, S.FAILED}),
    S.FAILED: frozenset({S.QUEUED, S.TODO, S.CANCELLED}),
    S.CANCELLED: frozenset({S.QUEUED, S.TODO}),
    S.BLOCKED: frozenset({S.TODO, S.CANCELLED}),
    S.DONE: frozenset({S.QUEUED, S.LANDING}),
    # A successful attempt waits for a person: approval, rejection (a new attempt) or cancel.
    S.REVIEW: frozenset({S.DONE, S.QUEUED, S.CANCELLED, S.LANDING}),
    # In its repository's merge train: landed (DONE), back to its agent (a conflict or a failed verify
    # of the landed result), out of retries (FAILED), or cancelled.
    S.LANDING: frozenset({S.DONE, S.QUEUED, S.RETRYING, S.FAILED, S.CANCELLED}),
}

#: Celery task states the API shows (`celery_task.status`, docs/api.md).
TaskState = Literal["PENDING", "STARTED", "PROGRESS", "SUCCESS", "FAILURE", "RETRY", "REVOKED"]


@dataclass(frozen=True)
class StatusFacts:
    """What every part of squad needs to know about one status, in one row (`STATUS_FACTS`): the
    store, the orchestrator, the event stream, the API, the CLI views and the dashboard
    (`GET /api/statuses`) derive their sets from this table instead of spelling them out."""

    meaning: str
    #: settled: nothing runs or will run for it without a person (or a user's retry)
    final: bool = False
    #: not settled yet: `orchestrate --wait` waits while a card is in it
    active: bool = False
    #: the orchestrator decides about it from its dependencies (the graph a pass keeps)
    waiting: bool = False
    #: a dependency in this status blocks its dependants (they go BLOCKED)
    blocks_dependants: bool = False
    #: its status event also goes to the `settled` stream: an orchestrator pass may have work
    wakes_orchestrator: bool = False
    #: an attempt holds the card's claim: live progress, log and cancel
    running: bool = False
    #: the board offers "cancel": an attempt is queued, running or about to be retried
    cancellable: bool = False
    #: `squad retry` (and the board's retry button) without --force
    retryable: bool = False
    #: the Celery task state the API shows for a card in this status (None: derived from its run)
    celery_state: TaskState | None = None


#: One row per status, in the dashboard's lane order (a status is one lane).
STATUS_FACTS: dict[Status, StatusFacts] = {
    S.TODO: StatusFacts("waiting for its dependencies and a free slot", active=True, waiting=True,
                        wakes_orchestrator=True),
    S.BLOCKED: StatusFacts("a dependency is FAILED, CANCELLED or BLOCKED", waiting=True, blocks_dependants=True),
    S.QUEUED: StatusFacts("a message (or a local slot) carries it, under `celery_task_id`", active=True,
                          cancellable=True, celery_state="PENDING"),
    S.IN_PROGRESS: StatusFacts("claimed by one attempt, with a lease", active=True, running=True,
                               cancellable=True),
    S.RETRYING: StatusFacts("failed; sent again at `next_attempt_at`", active=True, wakes_orchestrator=True,
                            cancellable=True, celery_state="RETRY"),
    S.NEEDS_INPUT: StatusFacts("its agent asked a person a question (`ask_human`) and waits for the answer",
                               active=True, running=True, cancellable=True),
    S.WAITING: StatusFacts("its attempt succeeded; it waits for the sub-cards it created", active=True,
                           cancellable=True, celery_state="SUCCESS"),
    S.REVIEW: StatusFacts("an attempt succeeded; a person approves or rejects it", celery_state="SUCCESS"),
    S.LANDING: StatusFacts("in its repository's merge train: applied to base, verified, then base moved",
                           active=True, wakes_orchestrator=True, cancellable=True, celery_state="SUCCESS"),
    S.FAILED: StatusFacts("retries spent (or not retryable)", final=True, blocks_dependants=True,
                          wakes_orchestrator=True, retryable=True, celery_state="FAILURE"),
    S.CANCELLED: StatusFacts("cancelled by a user", final=True, blocks_dependants=True, wakes_orchestrator=True,
                             retryable=True, celery_state="REVOKED"),
    S.DONE: StatusFacts("succeeded (and approved, with review on)", final=True, wakes_orchestrator=True,
                        celery_state="SUCCESS"),
}


def statuses_where(fact: str) -> frozenset[Status]:
    """The statuses for which a boolean fact of `StatusFacts` holds, e.g. `statuses_where("final")`."""
    return frozenset(s for s, facts in STATUS_FACTS.items() if getattr(facts, fact))


ACTIVE = statuses_where("active")
FINAL = statuses_where("final")
#: statuses in which an attempt holds the card's claim (a lease renewed by its worker)
CLAIMED = statuses_where("running")


def check_transition(card_id: str, old: Status | str, new: Status | str) -> None:
    """Raise TransitionError unless `old -> new` is allowed."""
    old_s, new_s = Status(old), Status(new)
    if new_s not in TRANSITIONS[old_s]:
        raise TransitionError(f"card {card_id}: cannot go from {old_s} to {new_s}")


def allowed_sources(new: Status) -> list[Status]:
    """Statuses from which `new` may be reached (for compare-and-set UPDATEs)."""
    return [old for old, targets in TRANSITIONS.items() if new in targets]
