"""Short ways into a test's card store: open one, add cards, bring one to a status, read a status back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from squad.core.cards import Usage, parse_card
from squad.core.retries import RetryPolicy
from squad.core.statuses import Status
from squad.store.card_store import CardStore, RunOutcome


def add_cards(store: CardStore, *cards: dict[str, Any]) -> None:
    store.add_cards([parse_card({"title": f"chaos card {c['card_id']}", **c}) for c in cards])


@contextmanager
def open_store(url: str) -> Iterator[CardStore]:
    store = CardStore(url)
    try:
        yield store
    finally:
        store.dispose()


def add(store: CardStore, card_id: str, **fields: Any) -> None:
    store.add_cards([parse_card({"card_id": card_id, "title": f"card {card_id}", **fields})])


def seed(store: CardStore, card_id: str, status: Status, *, progress: int | None = None, error: str = "boom",
         **fields: Any) -> str | None:
    """A card brought to `status` through the store's real transitions; returns its task id."""
    add(store, card_id, **fields)
    if status == Status.TODO:
        return None
    task_id = str(uuid.uuid4())
    assert store.enqueue(card_id, task_id, expected=[Status.TODO])
    if status == Status.QUEUED:
        return task_id
    if status == Status.CANCELLED:
        store.cancel(card_id)
        return task_id
    claim = store.claim(card_id, task_id, "w1@test", 30)
    assert claim is not None
    if status == Status.IN_PROGRESS:
        if progress is not None:
            store.set_progress(card_id, claim.token, progress, "agent executing")
        return task_id
    outcome = RunOutcome(succeeded=status == Status.DONE, error=None if status == Status.DONE else error,
                         exit_code=0 if status == Status.DONE else 1, usage=Usage(cost_usd=0.25),
                         log="2026-01-01T00:00:00.000+00:00 INFO hello\n2026-01-01T00:00:01.000+00:00 ERROR bad")
    new = store.finish(claim, outcome, RetryPolicy.fixed(0 if status == Status.FAILED else 3, delay_s=60))
    assert new == status
    return task_id


def seed_verified(store: CardStore, card_id: str, *, verify_exit: int, verify_output: str, land: bool = False,
                  landed_commit: str | None = None, **fields: Any) -> Status:
    """A card whose one attempt ran the verify gate, through the store's real transitions: a failed
    verify ends it FAILED; a passed one DONE, or LANDING with `land`, then DONE with `landed_commit`
    on its run once that is given (what the lander writes)."""
    task_id = seed(store, card_id, Status.QUEUED, **fields)
    assert task_id is not None
    claim = store.claim(card_id, task_id, "w1@test", 30)
    assert claim is not None
    ok = verify_exit == 0
    outcome = RunOutcome(succeeded=ok, error=None if ok else f"verify failed (exit {verify_exit})", exit_code=0,
                         verify_exit=verify_exit, verify_output=verify_output)
    new = store.finish(claim, outcome, RetryPolicy.fixed(0, delay_s=60), land=land)
    assert new is not None
    if landed_commit is not None:
        assert new == Status.LANDING
        store.set_run_landing(claim.run_id, landed_commit=landed_commit)
        assert store.landed(card_id)
        return Status.DONE
    return new


def status_of(store: CardStore, card_id: str) -> Status:
    """A card's status in the store now."""
    return store.get_card(card_id).status


def redis_keys(database_url: str) -> Any:
    """The Redis names of the store at this URL (`squad:<instance id>:...`)."""
    store = CardStore(database_url)
    try:
        return store.redis_keys
    finally:
        store.dispose()
