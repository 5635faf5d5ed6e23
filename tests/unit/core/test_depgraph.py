"""The pure dependency-graph logic on plain dicts (no store, no Redis)."""

from __future__ import annotations

import random

from squad.core.depgraph import WAITING, WaitingGraph, find_cycle
from support.graph_oracle import Graph, blocked_changes, ready


def test_ready_needs_every_dependency_done_and_orders_by_priority_then_age_then_id() -> None:
    graph: Graph = {
        "A": ("TODO", [], 5, 2.0), "B": ("TODO", ["A"], 9, 1.0), "C": ("TODO", [], 9, 3.0),
        "D": ("TODO", [], 5, 2.0), "E": ("DONE", [], 1, 0.0), "F": ("TODO", ["E"], 0, 0.0),
        "G": ("QUEUED", [], 9, 0.0),
    }
    assert ready(graph) == ["C", "A", "D", "F"]
    assert ready(graph, limit=2) == ["C", "A"]


def test_a_failed_dependency_blocks_and_its_recovery_releases() -> None:
    graph: Graph = {"A": ("FAILED", [], 5, 0.0), "B": ("TODO", ["A"], 5, 0.0),
                    "C": ("BLOCKED", ["gone"], 5, 0.0), "D": ("BLOCKED", ["A"], 5, 0.0)}
    assert blocked_changes(graph) == (["B"], ["C"])


def test_find_cycle_returns_the_path_or_none() -> None:
    assert find_cycle({"A": ["B"], "B": ["C"], "C": ["A"]}) == ["A", "B", "C", "A"]
    assert find_cycle({"A": ["B"], "B": [], "C": ["A", "missing"]}) is None


def settle(graph: WaitingGraph) -> None:
    """Decide and apply block/unblock until nothing moves (what the orchestrator's passes do)."""
    while True:
        to_block, to_release = graph.decide()
        if not to_block and not to_release:
            return
        for card_id in to_block:
            graph.set_status(card_id, "BLOCKED")
        for card_id in to_release:
            graph.set_status(card_id, "TODO")


def settle_full(full: Graph) -> None:
    while True:
        to_block, to_release = blocked_changes(full)
        if not to_block and not to_release:
            return
        for card_id in to_block:
            full[card_id] = ("BLOCKED", *full[card_id][1:])  # type: ignore[assignment]
        for card_id in to_release:
            full[card_id] = ("TODO", *full[card_id][1:])  # type: ignore[assignment]


def test_the_kept_graph_decides_as_the_whole_graph_after_any_sequence_of_changes() -> None:
    # Given a random store of 60 cards changed 400 times, the kept graph told only of each change
    rnd = random.Random(7)
    statuses = ["TODO", "QUEUED", "IN_PROGRESS", "DONE", "FAILED", "CANCELLED", "RETRYING", "REVIEW"]
    full: Graph = {}
    kept = WaitingGraph()

    def tell(card_id: str) -> None:
        if card_id not in full:
            kept.set_status(card_id, None)
            return
        status, deps, priority, created = full[card_id]
        if status in WAITING:
            for dep in kept.put_waiting(card_id, status, deps, priority, created, 0.0):
                kept.set_status(dep, full[dep][0] if dep in full else None)
        else:
            kept.set_status(card_id, status)

    for step in range(400):
        card_id = f"C{rnd.randrange(60)}"
        if card_id not in full or rnd.random() < 0.1:  # add or rewrite a waiting card
            older = [c for c in full if c < card_id]
            deps = rnd.sample(older, min(len(older), rnd.randrange(3)))
            full[card_id] = ("TODO", deps, rnd.randrange(10), float(step))
        elif rnd.random() < 0.05:
            del full[card_id]  # deleted (demo reset)
        else:
            full[card_id] = (rnd.choice(statuses), *full[card_id][1:])  # type: ignore[assignment]
        tell(card_id)
        # When both settle
        settle(kept)
        settle_full(full)
        # Expect the same waiting statuses and the same ready cards in the same order
        assert {c: e[0] for c, e in full.items() if e[0] in WAITING} == {c: e[0] for c, e in kept.waiting.items()}
        assert kept.ready_ids() == ready(full)
        assert kept.ready_ids(limit=3) == ready(full, limit=3)
