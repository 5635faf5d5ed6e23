"""Pure dependency-graph logic: where a cycle is, and the orchestrator's graph of waiting cards
(which are ready, which are blocked), kept between passes and changed card by card.

No SQL and no Redis here, so the backlog validator, the store and the orchestrator share one
algorithm and it can be tested on plain dicts (against the whole-graph oracle in
tests/support/graph_oracle.py).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator

from squad.core.statuses import Status, statuses_where

#: A dependency in one of these statuses blocks its dependants.
FAILED_DEPENDENCY = frozenset(s.value for s in statuses_where("blocks_dependants"))


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


#: Cards a pass decides about (the rest of the graph matters only as their dependencies' statuses).
WAITING = frozenset(s.value for s in statuses_where("waiting"))


class WaitingGraph:
    """The part of the graph a pass needs, kept between passes and changed card by card.

    `waiting` holds the TODO/BLOCKED cards (card_id -> (status, depends_on, priority, created_at)),
    `dep_status` the status of every other card one of them depends on (a dependency absent from both
    is missing from the store).
    Cards whose decision may have changed are `dirty` until the next `take_dirty()`; `ready` keeps
    the TODO cards found ready and not yet released (e.g. held back by `max_in_flight`).
    `decide` with the same graph gives exactly what the whole-graph oracle of the tests gives.
    """

    def __init__(self) -> None:
        self.waiting: dict[str, tuple[str, list[str], int, float]] = {}
        self.stamps: dict[str, float] = {}  # each waiting card's updated_at as last read
        self.dep_status: dict[str, str] = {}
        self.dependants: dict[str, set[str]] = {}
        self.dirty: set[str] = set()
        self.ready: dict[str, tuple[int, float, str]] = {}

    def status_of(self, card_id: str) -> str | None:
        """The card's status as known here (None: not known, or not in the store)."""
        entry = self.waiting.get(card_id)
        return entry[0] if entry is not None else self.dep_status.get(card_id)

    def load(self, rows: Iterable[tuple[str, str, list[str], int, float, float]]) -> set[str]:
        """Fill an empty graph with waiting cards (card_id, status, depends_on, priority,
        created_at, updated_at), all dirty; returns the dependencies not among them."""
        assert not self.waiting and not self.dependants
        waiting, stamps, dependants = self.waiting, self.stamps, self.dependants
        for card_id, status, deps, priority, created_at, stamp in rows:
            waiting[card_id] = (status, deps, priority, created_at)
            stamps[card_id] = stamp
            for dep in deps:
                users = dependants.get(dep)
                if users is None:
                    dependants[dep] = {card_id}
                else:
                    users.add(card_id)
        self.dirty.update(waiting)
        return dependants.keys() - waiting.keys()

    def put_waiting(self, card_id: str, status: str, depends_on: list[str], priority: int,
                    created_at: float, stamp: float) -> list[str]:
        """Add or replace a TODO/BLOCKED card; returns its dependencies not known here yet."""
        old = self.waiting.get(card_id)
        if old is not None:
            self._unlink(card_id, old[1])
        if (old[0] if old is not None else self.dep_status.get(card_id)) != status:
            self._touch_dependants(card_id)
        self.dep_status.pop(card_id, None)
        self.waiting[card_id] = (status, list(depends_on), priority, created_at)
        self.stamps[card_id] = stamp
        self.dirty.add(card_id)
        unknown = []
        for dep in depends_on:
            self.dependants.setdefault(dep, set()).add(card_id)
            if dep not in self.waiting and dep not in self.dep_status:
                unknown.append(dep)
        return unknown

    def set_status(self, card_id: str, status: str | None) -> None:
        """A card's new status (None: it left the store). A waiting card that stops waiting is
        kept only as a dependency, and only while something waits on it."""
        entry = self.waiting.get(card_id)
        if entry is not None and status in WAITING:
            if entry[0] != status:
                self.waiting[card_id] = (status, *entry[1:])
                self.dirty.add(card_id)
                self._touch_dependants(card_id)
            return
        if entry is not None:
            del self.waiting[card_id]
            self.stamps.pop(card_id, None)
            self.ready.pop(card_id, None)
            self._unlink(card_id, entry[1])
        elif self.dep_status.get(card_id) == status or card_id not in self.dependants:
            return
        if status is None:
            self.dep_status.pop(card_id, None)
        elif card_id in self.dependants:
            self.dep_status[card_id] = status
        self._touch_dependants(card_id)

    def decide(self) -> tuple[list[str], list[str]]:
        """(cards to block, cards to unblock) among the dirty cards, noting which are ready; the
        same decisions the whole-graph oracle makes (a missing
        dependency neither blocks nor is DONE)."""
        to_block: list[str] = []
        to_release: list[str] = []
        waiting, dep_status, found = self.waiting, self.dep_status, self.ready
        todo, blocked, done = Status.TODO.value, Status.BLOCKED.value, Status.DONE.value
        for card_id in self.dirty:
            entry = waiting.get(card_id)
            if entry is None:
                continue
            status, deps, priority, created_at = entry
            found.pop(card_id, None)
            states = [waiting[d][0] if d in waiting else dep_status.get(d) for d in deps]
            bad = not FAILED_DEPENDENCY.isdisjoint(states)
            if status == todo and bad:
                to_block.append(card_id)
            elif status == blocked and not bad:
                to_release.append(card_id)
            elif status == todo and all(st == done for st in states):
                found[card_id] = (-priority, created_at, card_id)
        self.dirty.clear()
        return sorted(to_block), sorted(to_release)

    def ready_ids(self, limit: int | None = None) -> list[str]:
        """Ready TODO cards: priority 9 first, then oldest, then by id (as `ready` orders them)."""
        if limit is not None and limit < len(self.ready):
            keys = heapq.nsmallest(limit, self.ready.values())
        else:
            keys = sorted(self.ready.values())
        return [key[2] for key in keys]

    def _unlink(self, card_id: str, depends_on: list[str]) -> None:
        for dep in depends_on:
            users = self.dependants.get(dep)
            if users is None:
                continue
            users.discard(card_id)
            if not users:
                del self.dependants[dep]
                if dep not in self.waiting:
                    self.dep_status.pop(dep, None)

    def _touch_dependants(self, card_id: str) -> None:
        self.dirty.update(self.dependants.get(card_id, ()))
