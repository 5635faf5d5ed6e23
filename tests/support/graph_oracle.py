"""The whole-graph oracle: ready and blocked cards decided over every card at once, the plain way.

Production decides incrementally (`squad.core.depgraph.WaitingGraph`, kept by the orchestrator between
passes); these functions read and decide over the whole graph, so the tests can hold the incremental
answers against them.
"""

from __future__ import annotations

from sqlalchemy import select

from squad.core.depgraph import FAILED_DEPENDENCY
from squad.core.statuses import Status
from squad.store.card_store import CardStore
from squad.store.tables import cards as cards_t

#: card_id -> (status, depends_on, priority, created_at)
Graph = dict[str, tuple[str, list[str], int, float]]


def ready(graph: Graph, limit: int | None = None) -> list[str]:
    """TODO cards whose dependencies are all DONE: priority 9 first, then oldest, then by id."""
    found = [(cid, p, c) for cid, (st, deps, p, c) in graph.items()
             if st == Status.TODO and all(graph.get(d, ("",))[0] == Status.DONE for d in deps)]
    found.sort(key=lambda x: (-x[1], x[2], x[0]))
    ids = [cid for cid, _p, _c in found]
    return ids if limit is None else ids[:limit]


def blocked_changes(graph: Graph) -> tuple[list[str], list[str]]:
    """(TODO cards to block, BLOCKED cards to release): a card is blocked while a dependency failed.

    A dependency missing from the graph counts as DONE (it was deleted, e.g. a demo reset).
    """
    to_block: list[str] = []
    to_release: list[str] = []
    for card_id, (status, deps, _p, _c) in graph.items():
        bad = any(graph.get(d, ("DONE",))[0] in FAILED_DEPENDENCY for d in deps)
        if status == Status.TODO and bad:
            to_block.append(card_id)
        elif status == Status.BLOCKED and not bad:
            to_release.append(card_id)
    return to_block, to_release


def read_graph(store: CardStore) -> Graph:
    """Every card of the store as a `Graph`."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(cards_t.c.card_id, cards_t.c.status, cards_t.c.depends_on,
                                   cards_t.c.priority, cards_t.c.created_at))
        return {r.card_id: (r.status, list(r.depends_on or []), r.priority, r.created_at) for r in rows}


def ready_cards(store: CardStore, limit: int | None = None) -> list[str]:
    """The store's ready cards, decided over the whole graph."""
    return ready(read_graph(store), limit)


def update_blocked(store: CardStore) -> tuple[list[str], list[str]]:
    """Block and unblock the store's cards as the whole graph says (through the store's own
    compare-and-set `apply_blocked`, as the orchestrator does)."""
    return store.apply_blocked(*blocked_changes(read_graph(store)))
