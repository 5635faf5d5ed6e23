"""The pure dependency-graph logic on plain dicts (no store, no Redis)."""

from __future__ import annotations

from squad.scheduling import Graph, blocked_changes, find_cycle, ready


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
