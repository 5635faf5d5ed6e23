"""User operations on one card (cancel, retry), shared by the CLI and the API."""

from __future__ import annotations

import time
from dataclasses import dataclass

from squad.core.cards import Card
from squad.core.constants import KILL_GRACE_S
from squad.core.errors import NotFoundError, TransitionError
from squad.core.statuses import STATUS_FACTS, Status
from squad.orchestration.dispatch import Producer

STOP_WAIT_S = KILL_GRACE_S + 10
STOP_POLL_S = 0.25


@dataclass
class RetryResult:
    """The answer of a retry (docs/api.md)."""

    status: str
    card_id: str
    old_task_id: str | None
    new_task_id: str | None
    message: str


def runs_closed(producer: Producer, card_id: str) -> bool:
    """True when no run of the card is open (its agent group has been ended)."""
    return all(run.ended_at is not None for run in producer.store.list_runs(card_id))


def wait_stopped(producer: Producer, card_id: str, timeout_s: float = STOP_WAIT_S) -> bool:
    """Wait until no run of the card is open (its agent group has been ended)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if runs_closed(producer, card_id):
            return True
        time.sleep(STOP_POLL_S)
    return False


def cancel_card(producer: Producer, card_id: str, *, wait: bool = True) -> Card:
    """Cancel: card CANCELLED at once, queued message revoked, running agent group ended, no retry."""
    before = producer.store.get_card(card_id)
    card = producer.store.cancel(card_id)
    _cancel_subcards(producer, card_id)
    running = STATUS_FACTS[before.status].running
    if not running:
        # Only a message still waiting in the broker needs revoking; a running attempt sees its
        # claim vanish (and a broadcast per card would slow a storm of cancels down).
        producer.revoke(before.celery_task_id)
    producer.status_event(card_id, Status.CANCELLED, before.celery_task_id, attempt=before.attempts)
    if wait and running:
        wait_stopped(producer, card_id)
    if not running:  # a running attempt removes its own worktree when it ends
        from squad.actions.review import cleanup_local

        cleanup_local(producer.settings, producer.store, card)
    return card


def _cancel_subcards(producer: Producer, card_id: str) -> None:
    """Cancelling a parent cancels its sub-cards (and theirs) that have not ended (docs/agents.md)."""
    from squad.store.family import unfinished_descendants

    for child in unfinished_descendants(producer.store, card_id):
        try:
            before = producer.store.get_card(child)
            producer.store.cancel(child)
        except (TransitionError, NotFoundError):
            continue  # it ended meanwhile
        if not STATUS_FACTS[before.status].running:
            producer.revoke(before.celery_task_id)
        producer.status_event(child, Status.CANCELLED, before.celery_task_id, attempt=before.attempts)


def retry_card(producer: Producer, card_id: str, *, force: bool = False) -> RetryResult:
    """Queue a new attempt; FAILED/CANCELLED only, unless `force` (a running one is ended first)."""
    card = producer.store.get_card(card_id)
    old = card.celery_task_id
    if old is None and card.attempts == 0:
        raise NotFoundError(f"card {card_id} has no task yet")
    expected: list[Status]
    if STATUS_FACTS[card.status].retryable:
        expected = [card.status]
    elif not force:
        retryable = " or ".join(s.value for s in STATUS_FACTS if STATUS_FACTS[s].retryable)
        raise TransitionError(f"card {card_id} is {card.status}: only {retryable} cards can be "
                              "retried (use --force to restart it)")
    elif STATUS_FACTS[card.status].cancellable:
        cancel_card(producer, card_id, wait=True)
        expected = [Status.CANCELLED]
    elif card.status == Status.DONE:
        expected = [Status.DONE]
    else:
        raise TransitionError(f"card {card_id} is {card.status} and cannot be retried")
    new = producer.send(card_id, expected=expected, fresh_retries=True)
    if new is None:
        raise TransitionError(f"card {card_id} changed status meanwhile; try again")
    return RetryResult(status="queued", card_id=card_id, old_task_id=old, new_task_id=new,
                       message=f"card {card_id} queued again as task {new}")
