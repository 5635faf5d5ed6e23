"""Sub-cards and questions to a person in the store (docs/agents.md): what the agents' channel and
the people answering it write.

A question moves the card IN_PROGRESS → NEEDS_INPUT under the asking attempt's claim (the claim and
its lease stay: the worker slot is held while it waits); an answer moves it back to IN_PROGRESS and
leaves the text in `answer` until the waiting attempt takes it. A parent whose attempt succeeded
while its sub-cards were not DONE is WAITING (`CardStore.finish`) and is settled here: DONE when
all its children are, FAILED when one failed for good.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update

from squad.core.cards import Card
from squad.core.statuses import CLAIMED, FINAL, Status
from squad.store.card_store import CardStore, _card_from_row, _move, now_s
from squad.store.tables import cards as cards_t

#: a child in one of these has failed for good: its parent fails too
_FAILED_FOR_GOOD = frozenset({Status.FAILED, Status.CANCELLED})


def ask(store: CardStore, card_id: str, token: str, question: str, choices: Sequence[str] | None) -> bool:
    """IN_PROGRESS → NEEDS_INPUT for the attempt holding `token`; False when it no longer holds it."""
    with store.tx() as conn:
        res = conn.execute(_move(card_id, Status.NEEDS_INPUT, expected=[Status.IN_PROGRESS])
                           .where(cards_t.c.claim_token == token)
                           .values(question=question, choices=list(choices) if choices is not None else None,
                                   answer=None, asked_at=now_s(), updated_at=now_s(),
                                   current_step="waiting for an answer"))
        return res.rowcount == 1


def answer(store: CardStore, card_id: str, text: str) -> Card | None:
    """A person's answer: NEEDS_INPUT → IN_PROGRESS with `answer` kept for the waiting attempt; None
    when the card is not waiting for one (any more)."""
    with store.tx() as conn:
        row = conn.execute(_move(card_id, Status.IN_PROGRESS, expected=[Status.NEEDS_INPUT])
                           .where(cards_t.c.claim_token.is_not(None))
                           .values(answer=text, question=None, choices=None, updated_at=now_s(),
                                   current_step="answered")
                           .returning(*cards_t.c)).first()
    return None if row is None else _card_from_row(row)


def take_answer(store: CardStore, card_id: str, token: str) -> tuple[bool, str | None]:
    """(still claimed, the answer if one came) for the waiting attempt; the answer is taken (cleared)."""
    with store.tx() as conn:
        row = conn.execute(select(cards_t.c.status, cards_t.c.claim_token, cards_t.c.answer)
                           .where(cards_t.c.card_id == card_id)).first()
        if row is None or row.claim_token != token or row.status not in CLAIMED:
            return False, None
        if row.answer is None:
            return True, None
        conn.execute(update(cards_t).where(cards_t.c.card_id == card_id).where(cards_t.c.claim_token == token)
                     .values(answer=None))
        return True, str(row.answer)


def stop_asking(store: CardStore, card_id: str, token: str) -> bool:
    """NEEDS_INPUT → IN_PROGRESS without an answer (the wait timed out or its attempt ends)."""
    with store.tx() as conn:
        res = conn.execute(_move(card_id, Status.IN_PROGRESS, expected=[Status.NEEDS_INPUT])
                           .where(cards_t.c.claim_token == token)
                           .values(question=None, choices=None, answer=None, updated_at=now_s(),
                                   current_step="no answer"))
        return res.rowcount == 1


def children(store: CardStore, parent: str) -> dict[str, Status]:
    """card_id -> status of a card's sub-cards (parent index)."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(cards_t.c.card_id, cards_t.c.status).where(cards_t.c.parent == parent))
        return {r[0]: Status(r[1]) for r in rows}


def child_count(store: CardStore, parent: str) -> int:
    """How many sub-cards a card has."""
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(cards_t)
                                .where(cards_t.c.parent == parent)).scalar_one())


def ancestors(store: CardStore, card_id: str, limit: int) -> list[str]:
    """The card's parent, its parent's parent, …: at most `limit` + 1 of them."""
    found: list[str] = []
    current: str | None = card_id
    with store.engine.connect() as conn:
        while current is not None and len(found) <= limit:
            current = conn.execute(select(cards_t.c.parent).where(cards_t.c.card_id == current)).scalar()
            if current is not None:
                found.append(current)
    return found


def settle_parent(store: CardStore, parent: str) -> tuple[Status, str | None] | None:
    """A WAITING parent whose children settled: DONE when all are DONE, FAILED (with the reason)
    when one failed for good; (new status, error), or None when it stays as it is."""
    kids = children(store, parent)
    failed = sorted(cid for cid, status in kids.items() if status in _FAILED_FOR_GOOD)
    values: dict[str, Any] = {"updated_at": now_s()}
    if failed:
        new, error = Status.FAILED, f"sub-card {failed[0]} is {kids[failed[0]]}"
        values.update(last_error=error, current_step="a sub-card failed")
    elif all(status == Status.DONE for status in kids.values()):
        new, error = Status.DONE, None
        values.update(current_step="done", last_error=None)
    else:
        return None
    with store.tx() as conn:
        res = conn.execute(_move(parent, new, expected=[Status.WAITING]).values(**values))
    return (new, error) if res.rowcount == 1 else None


def waiting_parents(store: CardStore) -> list[str]:
    """Every WAITING card (status index)."""
    with store.engine.connect() as conn:
        return [r[0] for r in conn.execute(select(cards_t.c.card_id)
                                           .where(cards_t.c.status == Status.WAITING.value))]


def unfinished_descendants(store: CardStore, parent: str) -> list[str]:
    """The card's sub-cards (and theirs, …) that are not final, parents first."""
    out: list[str] = []
    frontier = [parent]
    seen = {parent}
    while frontier:
        nxt: list[str] = []
        for cid in frontier:
            for kid, status in children(store, cid).items():
                if kid in seen:
                    continue
                seen.add(kid)
                nxt.append(kid)
                if status not in FINAL:
                    out.append(kid)
        frontier = nxt
    return out


def next_child_number(store: CardStore, parent: str) -> int:
    """The first n such that no stored card is `<parent>.<m>` for any m >= n."""
    prefix = f"{parent}."
    with store.engine.connect() as conn:
        ids = conn.execute(select(cards_t.c.card_id).where(cards_t.c.card_id.startswith(prefix, autoescape=True)))
        numbers = [int(rest) for (cid,) in ids if (rest := cid[len(prefix):]).isdigit()]
    return max(numbers, default=0) + 1
