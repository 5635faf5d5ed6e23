"""The Python submit API: chains run in order, groups in parallel, all or nothing."""

from __future__ import annotations

import pytest

from squad.core.errors import BacklogError
from squad.core.settings import load_settings
from squad.core.statuses import Status
from squad.orchestration.orchestrator import make_orchestrator
from squad.store.card_store import CardStore
from squad.submit import submit_chain, submit_group


def test_chain_runs_each_card_after_the_previous_one(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a chain of three demo cards submitted through the Python API
    monkeypatch.setenv("SQUAD_DEMO_DURATION", "0.1")
    settings = load_settings(database_url=sqlite_url, use_celery=False)
    ids = submit_chain(settings, [{"card_id": f"s{i}", "title": f"step {i}", "agent": "demo"} for i in range(3)])
    store = CardStore(sqlite_url)
    # Expect each card to depend on the previous one
    assert ids == ["s0", "s1", "s2"]
    assert [store.get_card(i).depends_on for i in ids] == [[], ["s0"], ["s1"]]
    # When a local orchestrator runs until settled
    orch = make_orchestrator(settings, store, mode="local", max_in_flight=3)
    assert orch.run(wait=True, interval=0.05) == 0
    orch.dispatcher.close()
    # Expect all DONE, strictly in chain order
    runs = [store.list_runs(i)[0] for i in ids]
    assert all(store.get_card(i).status == Status.DONE for i in ids)
    assert runs[0].ended_at <= runs[1].started_at and runs[1].ended_at <= runs[2].started_at


def test_group_is_all_or_nothing(sqlite_url: str) -> None:
    # Given a group where one card is invalid
    settings = load_settings(database_url=sqlite_url, use_celery=False)
    # When it is submitted, expect a BacklogError naming the bad card and nothing stored
    with pytest.raises(BacklogError) as err:
        submit_group(settings, [{"card_id": "ok", "title": "fine"}, {"card_id": "bad", "title": "x", "priority": 12}])
    assert any("bad" in p for p in err.value.problems)
    assert CardStore(sqlite_url).list_cards() == []
