"""The orchestrator's kept dependency graph on real SQLite and PostgreSQL: each pass reads only
what changed, yet sees every writer (other processes' cards, a lagging clock, deletions)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import update

from squad.core.cards import CardSpec
from squad.core.retries import RetryPolicy
from squad.core.settings import load_settings
from squad.core.statuses import Status
from squad.live.connections import async_redis
from squad.live.events import EventBus, iso_now, log_event, progress_event, publish_async, status_event
from squad.orchestration.dispatch import DeferredDispatcher
from squad.orchestration.orchestrator import Orchestrator, TickResult
from squad.orchestration.pass_graph import COUNT_CHECK_S
from squad.store.card_store import CardStore, RunOutcome
from squad.store.tables import cards


def spec(card_id: str, **fields: Any) -> CardSpec:
    return CardSpec(card_id=card_id, title=f"title of {card_id}", **fields)


@pytest.fixture
def store(db_url: str) -> Iterator[CardStore]:
    s = CardStore(db_url)
    yield s
    s.dispose()


def orchestrator(store: CardStore) -> Orchestrator:
    """An orchestrator whose messages wait for a local orchestrator (nothing runs them here)."""
    return Orchestrator(load_settings(), store, DeferredDispatcher())


def run(store: CardStore, card_id: str, *, ok: bool) -> None:
    """What a worker does with a QUEUED card: claim it under its task id, then finish it."""
    claim = store.claim(card_id, store.get_card(card_id).celery_task_id or "", "w1", 30)
    assert claim is not None
    store.finish(claim, RunOutcome(succeeded=ok, error=None if ok else "exit 3"), RetryPolicy.fixed(0))


def test_a_pass_sees_what_other_writers_did_since_the_last_one(store: CardStore) -> None:
    # Given an orchestrator past its first pass: A and F released, B waiting on A
    store.add_cards([spec("A"), spec("B", depends_on=["A"]), spec("F")])
    orch = orchestrator(store)
    assert orch.tick().released == ["A", "F"]
    # When workers finish A and fail F, and another process adds C and D (D waits on F)
    run(store, "A", ok=True)
    run(store, "F", ok=False)
    store.add_cards([spec("C"), spec("D", depends_on=["F"])])
    res = orch.tick()
    # Expect B and C released and D blocked in the next pass
    assert (sorted(res.released), res.blocked) == (["B", "C"], ["D"])
    # When F is retried by hand and succeeds
    assert store.enqueue("F", "retry-of-F", expected=[Status.FAILED])
    run(store, "F", ok=True)
    # Expect D unblocked, then released, and all of it without reading the whole graph again
    assert orch.tick().released == []
    assert store.get_card("D").status == Status.TODO
    assert orch.tick().released == ["D"]
    assert orch.pass_graph.full_reads == 1


def test_cards_stamped_before_the_window_are_seen_by_the_count_of_waiting_cards(store: CardStore) -> None:
    # Given an orchestrator past its first pass over a card waiting on a running one
    store.add_cards([spec("R"), spec("W", depends_on=["R"])])
    orch = orchestrator(store)
    assert orch.tick().released == ["R"]
    # When a card arrives stamped an hour ago (a writer whose clock lags, or a long import
    # transaction that committed long after it stamped its rows)
    store.add_cards([spec("LATE")])
    with store.tx() as conn:
        conn.execute(update(cards).where(cards.c.card_id == "LATE").values(updated_at=time.time() - 3600))
    # Expect the first pass that counts the waiting cards to release it all the same
    time.sleep(COUNT_CHECK_S)
    assert orch.tick().released == ["LATE"]


def test_deleted_cards_leave_the_graph(store: CardStore) -> None:
    # Given cards waiting on a running card, then one of them deleted (a demo reset)
    store.add_cards([spec("R"), spec("W", depends_on=["R"]), spec("X", depends_on=["R"])])
    orch = orchestrator(store)
    assert orch.tick().released == ["R"]
    store.delete_cards(["X"])
    # When R finishes
    run(store, "R", ok=True)
    # Expect W alone released, and X gone from the graph by the next pass
    assert orch.tick().released == ["W"]
    orch.tick()
    assert "X" not in orch.pass_graph.graph.waiting


def test_two_orchestrators_on_one_store_release_each_card_once(store: CardStore) -> None:
    # Given two orchestrators past their first pass (nothing ready yet), then 40 cards added
    first, second = orchestrator(store), orchestrator(store)
    first.tick(), second.tick()
    store.add_cards([spec(f"C{i:02}", priority=i % 10) for i in range(40)])
    # When both pass, one after the other, several times
    released = [cid for _ in range(3) for orch in (first, second) for cid in orch.tick().released]
    # Expect every card released exactly once
    assert sorted(released) == [f"C{i:02}" for i in range(40)]
    assert store.count_by_status()[Status.QUEUED] == 40


def test_a_status_event_makes_the_next_pass_read_its_card_whatever_its_stamp(store: CardStore,
                                                                             redis_url: str) -> None:
    # Given an orchestrator waiting on the event stream, W waiting on running R
    events = EventBus(redis_url, store.redis_keys)
    orch = Orchestrator(load_settings(), store, DeferredDispatcher(), events)
    store.add_cards([spec("R"), spec("W", depends_on=["R"])])
    assert orch.tick().released == ["R"]
    orch.wait_for_change(0.01)  # now waiting from the stream's current end
    # When a worker whose clock lags by an hour finishes R and publishes its status event
    run(store, "R", ok=True)
    with store.tx() as conn:
        conn.execute(update(cards).where(cards.c.card_id == "R").values(updated_at=time.time() - 3600))
    events.publish(status_event("R", Status.DONE))
    orch.wait_for_change(5.0)
    # Expect the next pass to release W
    assert orch.tick().released == ["W"]
    events.close()


def test_cards_added_together_wake_a_pass_that_reads_them_whatever_their_stamp(store: CardStore,
                                                                              redis_url: str) -> None:
    # Given an orchestrator past its first pass, waiting on the event stream
    from squad.actions.backlog import add_cards

    events = EventBus(redis_url, store.redis_keys)
    orch = Orchestrator(load_settings(), store, DeferredDispatcher(), events)
    assert orch.tick().released == []
    orch.wait_for_change(0.01)  # now waiting from the stream's current end
    # When another process, whose clock lags by an hour, adds two cards together (one `added` event)
    done = add_cards(store, [{"card_id": "N1", "title": "n1"}, {"card_id": "N2", "title": "n2"}], settings=None,
                     events=events)
    assert [e["type"] for e in done.events] == ["added"]
    with store.tx() as conn:
        conn.execute(update(cards).where(cards.c.card_id.in_(["N1", "N2"])).values(updated_at=time.time() - 3600))
    # Expect the wake-up to run a pass, and the pass to release both cards it named
    assert orch.wait_for_change(5.0) is True
    assert orch.tick().released == ["N1", "N2"]
    events.close()


def test_only_a_status_event_the_graph_cares_about_wakes_a_pass(store: CardStore, redis_url: str) -> None:
    # Given an orchestrator waiting on the event stream: R runs alone, A runs and W waits on A
    events = EventBus(redis_url, store.redis_keys)
    orch = Orchestrator(load_settings(), store, DeferredDispatcher(), events)
    store.add_cards([spec("R"), spec("A"), spec("W", depends_on=["A"])])
    assert orch.tick().released == ["A", "R"]
    assert orch.tick().released == []  # decides W again now that A is QUEUED: nothing to do
    orch.wait_for_change(0.01)  # now waiting from the stream's current end
    # When R finishes: nothing waits on it
    run(store, "R", ok=True)
    events.publish(status_event("R", Status.DONE))
    # Expect the wake-up to say so (no pass), the final event counted for --wait
    assert orch.wait_for_change(5.0) is False and orch.finals_seen == 1
    # When A finishes, which W waits on
    run(store, "A", ok=True)
    events.publish(status_event("A", Status.DONE))
    # Expect a pass, and it releases W
    assert orch.wait_for_change(5.0) is True
    assert orch.tick().released == ["W"]
    # When a card is added (its TODO event)
    store.add_cards([spec("N")])
    events.publish(status_event("N", Status.TODO))
    # Expect a pass
    assert orch.wait_for_change(5.0) is True
    assert orch.tick().released == ["N"]
    events.close()


def test_only_statuses_a_pass_may_act_on_reach_the_orchestrators_wake_stream(store: CardStore,
                                                                              redis_url: str) -> None:
    # Given the position of the wake stream (`settled`)
    events, keys = EventBus(redis_url, store.redis_keys), store.redis_keys
    start = events.settled_position()
    # When a worker's batches go out: lines, progress, IN_PROGRESS, QUEUED (nothing a pass acts on)
    line = (iso_now(), "INFO", "working")
    events.append_logs("R", "t1", [line], [status_event("R", Status.IN_PROGRESS, "t1"),
                                           progress_event("R", "t1", progress=50, current_step="half", elapsed=0.1,
                                                          worker="w"),
                                           log_event("R", "t1", level="INFO", message="working")])
    events.publish(status_event("Q", Status.QUEUED, "t2"))
    # Expect no wake-up
    assert events.wait_status(start, block_s=0.05)[0] == []
    # When R's DONE goes out with its last batch, and the API adds N (its TODO event)
    events.append_logs("R", "t1", [line], [status_event("R", Status.DONE, "t1")])

    async def api_adds() -> None:
        client = async_redis(redis_url)
        await publish_async(client, keys, status_event("N", Status.TODO))
        await client.aclose()

    asyncio.run(api_adds())
    # Expect both, in order, and every event still on task_updates for the other readers
    found, _last = events.wait_status(start, block_s=1.0)
    assert found == [("R", "DONE"), ("N", "TODO")]
    types = [(f["type"], f.get("status")) for _id, f in events.redis.xrange(keys.task_updates)]
    assert types == [("status", "IN_PROGRESS"), ("progress", None), ("log", None), ("status", "QUEUED"),
                     ("status", "DONE"), ("status", "TODO")]
    events.close()


def test_a_card_settling_wakes_a_pass_while_ready_cards_are_held_back(store: CardStore, redis_url: str) -> None:
    # Given max_in_flight 1: X released, Y ready and held back
    events = EventBus(redis_url, store.redis_keys)
    orch = Orchestrator(load_settings(), store, DeferredDispatcher(), events, max_in_flight=1)
    store.add_cards([spec("X"), spec("Y")])
    assert orch.tick().released == ["X"]
    orch.wait_for_change(0.01)
    # When X finishes (nothing waits on it)
    run(store, "X", ok=True)
    events.publish(status_event("X", Status.DONE))
    # Expect a pass, and it releases Y into the freed slot
    assert orch.wait_for_change(5.0) is True
    assert orch.tick().released == ["Y"]
    events.close()


class CountingOrchestrator(Orchestrator):
    """Counts its passes."""

    passes = 0

    def tick(self, *, release: bool = True) -> TickResult:
        self.passes += 1
        return super().tick(release=release)


def test_orchestrate_wait_ends_when_the_last_card_settles_without_a_pass(store: CardStore, redis_url: str) -> None:
    # Given an orchestrator in --wait with a long poll interval, and two cards a worker will run
    events = EventBus(redis_url, store.redis_keys)
    orch = CountingOrchestrator(load_settings(), store, DeferredDispatcher(), events)
    store.add_cards([spec("P"), spec("Q")])
    worker_done = threading.Event()

    def worker() -> None:
        while store.count_by_status()[Status.QUEUED] < 2:
            time.sleep(0.01)
        for card_id in ("P", "Q"):
            run(store, card_id, ok=card_id == "P")
            events.publish(status_event(card_id, store.get_card(card_id).status))
        worker_done.set()

    thread = threading.Thread(target=worker)
    thread.start()
    # When it runs with a safety-net poll longer than its --timeout
    code = orch.run(once=True, wait=True, interval=600, timeout=60)
    thread.join()
    # Expect it to end on the final events (exit 1: Q failed) after its first pass only
    assert worker_done.is_set() and (code, orch.passes) == (1, 1)
    events.close()


def age(store: CardStore, card_id: str, seconds: float = 3600) -> None:
    """Stamp a card's last write `seconds` ago (a writer whose clock lags, or a late commit)."""
    with store.tx() as conn:
        conn.execute(update(cards).where(cards.c.card_id == card_id).values(updated_at=time.time() - seconds))


def test_a_card_is_released_only_as_the_graph_read_it(store: CardStore) -> None:
    # Given X and Y found ready (Y after D, which is DONE), not released yet, and R running
    store.add_cards([spec("D"), spec("R"), spec("X"), spec("Y", depends_on=["D"])])
    orch = orchestrator(store)
    assert store.enqueue_many(["D", "R"]) and store.claim("R", store.get_card("R").celery_task_id or "", "w1", 30)
    run(store, "D", ok=True)
    orch.tick(release=False)
    assert orch.pass_graph.graph.ready_ids() == ["X", "Y"]
    # When, unseen by the graph, X is rewritten to wait on R and D is queued again (late commits)
    store.add_cards([spec("X", depends_on=["R"])], update_existing=True)
    age(store, "X")
    assert store.enqueue("D", "again", expected=[Status.DONE])
    age(store, "D")
    # Expect neither released, then the next pass to know why
    assert orch.tick().released == []
    assert orch.tick().released == []
    assert orch.pass_graph.graph.waiting["X"][1] == ["R"]
    assert store.count_by_status()[Status.TODO] == 2
