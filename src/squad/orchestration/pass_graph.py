"""The orchestrator's dependency graph, kept between passes: a pass costs O(changes), not O(waiting cards).

The first pass reads every TODO/BLOCKED card and its dependencies' statuses. Each later pass reads
only the cards written since the previous read (`updated_at` index; every status write stamps it),
less `LOOKBACK_S` so that a transaction committing a little after it stamped its rows, or a writer
on another machine whose clock lags a little, is still seen (the window is measured by the
database's clock on PostgreSQL); a card read again unchanged costs a dict look-up. Cards named by
the status events the orchestrator waits on are read again whatever their stamp (a worker whose
clock lags by minutes).
Two safety nets: the number of waiting cards is compared with the graph's at most every
`COUNT_CHECK_S` (it catches a bulk import whose long transaction committed rows stamped before the
window, another orchestrator's bulk release, a deletion; counting is O(waiting cards), though in
the database's C code), and the whole graph is read again every `FULL_READ_S`. Every decision a
pass takes from the graph is still a compare-and-set in the store, so a stale graph can delay a
card, never enqueue it twice.
"""

from __future__ import annotations

import time

import structlog

from squad.core.depgraph import WAITING, WaitingGraph
from squad.store.card_store import CardStore, GraphRow

log = structlog.get_logger(__name__)
LOOKBACK_S = 5.0
COUNT_CHECK_S = 1.0
FULL_READ_S = 60.0


class PassGraph:
    """A `WaitingGraph` kept in step with the store."""

    def __init__(self, store: CardStore, *, lookback_s: float = LOOKBACK_S, full_read_s: float = FULL_READ_S) -> None:
        self.store = store
        self.lookback_s, self.full_read_s = lookback_s, full_read_s
        self.graph = WaitingGraph()
        self.full_reads = 0
        self._since: float | None = None  # read again from here (store time, seconds)
        self._next_full = 0.0  # monotonic
        self._next_count = 0.0  # monotonic
        self._recheck: set[str] = set()  # cards the orchestrator failed to move: read them again

    def refresh(self) -> WaitingGraph:
        """Bring the graph up to date; its dirty cards are the ones a pass must decide about."""
        started = self.store.db_now()  # PostgreSQL: the database's clock, not this machine's
        if self._since is None or time.monotonic() >= self._next_full:
            self._full_read()
        else:
            now = time.monotonic()
            count = now >= self._next_count
            if count:
                self._next_count = now + COUNT_CHECK_S
            changed, waiting = self.store.graph_changes(self._since, count_waiting=count)
            self._apply(changed)
            if waiting is not None and waiting != len(self.graph.waiting):
                log.info("waiting cards changed unseen; reading the whole graph again",
                         store=waiting, graph=len(self.graph.waiting))
                self._full_read()
        self._since = started - self.lookback_s
        return self.graph

    def moved(self, card_id: str, status: str) -> None:
        """The orchestrator itself moved a card (its compare-and-set succeeded)."""
        self.graph.set_status(card_id, status)

    def recheck(self, card_ids: list[str]) -> None:
        """Read these cards again on the next pass whatever their stamp: the orchestrator's
        compare-and-set failed for them (another writer moved them), or a status event named them
        (its writer's clock may lag the look-back window)."""
        for card_id in card_ids:
            self.graph.ready.pop(card_id, None)
        self._recheck.update(card_ids)

    def pending(self) -> bool:
        """True when cards wait to be read again (`recheck`) or decided (dirty)."""
        return bool(self._recheck) or bool(self.graph.dirty)

    def _full_read(self) -> None:
        graph = WaitingGraph()
        unknown = graph.load(self.store.waiting_rows())
        self.graph = graph
        self._load_dependencies(unknown)
        self._recheck.clear()
        self.full_reads += 1
        self._next_full = time.monotonic() + self.full_read_s
        self._next_count = time.monotonic() + COUNT_CHECK_S

    def _apply(self, changed: list[tuple[str, str, float]]) -> None:
        graph = self.graph
        again = self._recheck
        self._recheck = set()
        for card_id, status, stamp in changed:
            if status in WAITING:
                if graph.status_of(card_id) != status or graph.stamps.get(card_id) != stamp:
                    again.add(card_id)  # new, back to waiting, or rewritten: its dependencies may differ
            else:
                graph.set_status(card_id, status)
        if again:
            rows = self.store.waiting_rows(sorted(again))
            self._put(rows)
            for card_id in again - {row[0] for row in rows}:
                graph.set_status(card_id, None)  # deleted

    def _put(self, rows: list[GraphRow]) -> None:
        unknown: set[str] = set()
        for row in rows:
            if row[1] in WAITING:
                unknown.update(self.graph.put_waiting(*row))
            else:
                self.graph.set_status(row[0], row[1])
        self._load_dependencies(unknown - self.graph.waiting.keys())

    def _load_dependencies(self, card_ids: set[str]) -> None:
        found = self.store.statuses(sorted(card_ids))
        for card_id in card_ids:
            self.graph.set_status(card_id, found.get(card_id))
