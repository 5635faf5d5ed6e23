"""Pure dependency-graph logic: which cards are ready, which are blocked, where a cycle is.

No SQL and no Redis here, so the backlog validator, the store and the orchestrator share one
algorithm and it can be tested on plain dicts.
"""

from __future__ import annotations

from collections.abc import Iterator

from squad.cards import Status

#: card_id -> (status, depends_on, priority, created_at)
Graph = dict[str, tuple[str, list[str], int, float]]
#: A dependency in one of these statuses blocks its dependants.
FAILED_DEPENDENCY = frozenset({Status.FAILED.value, Status.CANCELLED.value, Status.BLOCKED.value})


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


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a path (first == last), or None."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(graph, white)
    for root in graph:
        if color[root] != white:
            continue
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(graph[root]))]
        path = [root]
        color[root] = grey
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                color[node] = black
                stack.pop()
                path.pop()
            elif nxt in color and color[nxt] == grey:
                return [*path[path.index(nxt):], nxt]
            elif nxt in color and color[nxt] == white:
                color[nxt] = grey
                stack.append((nxt, iter(graph[nxt])))
                path.append(nxt)
    return None
