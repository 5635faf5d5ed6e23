"""The card store on real SQLite and real PostgreSQL: atomic transitions, claims, retries, migrations."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import squad.store.card_store
from squad.core.cards import CardSpec, Usage
from squad.core.errors import BacklogError, DuplicateCardError, NotFoundError, TransitionError
from squad.core.retries import RetryPolicy
from squad.core.statuses import Status
from squad.orchestration.pass_graph import PassGraph
from squad.store.card_store import CardStore, Claim, RunOutcome
from squad.store.tables import metadata
from support.graph_oracle import ready_cards, update_blocked
from support.store import status_of

RACE_ROUNDS = 50


def spec(card_id: str, **fields: Any) -> CardSpec:
    return CardSpec(card_id=card_id, title=fields.pop("title", f"title of {card_id}"), **fields)


def queue(store: CardStore, card_id: str, task_id: str | None = None) -> str:
    """Move a TODO/RETRYING/FAILED card to QUEUED under a task id."""
    task_id = task_id or f"task-{card_id}-{time.monotonic_ns()}"
    assert store.enqueue(card_id, task_id, expected=[Status.TODO, Status.RETRYING, Status.FAILED,
                                                     Status.CANCELLED])
    return task_id


def start(store: CardStore, card_id: str, lease_s: float = 30) -> Claim:
    claim = store.claim(card_id, queue(store, card_id), "w1", lease_s)
    assert claim is not None
    return claim


def finish(store: CardStore, claim: Claim, *, ok: bool, max_retries: int = 0, cost: float | None = None,
           budget: float | None = None, retryable: bool = True) -> Status | None:
    outcome = RunOutcome(succeeded=ok, error=None if ok else "exit 3", exit_code=0 if ok else 3,
                         usage=Usage(cost_usd=cost), log="line one\nline two", retryable=retryable)
    return store.finish(claim, outcome, RetryPolicy.fixed(max_retries, delay_s=60, budget_usd=budget))


def settle_blocked(store: CardStore) -> None:
    """Run the oracle's update_blocked until nothing changes (as the orchestrator's passes do)."""
    for _ in range(10):
        blocked, unblocked = update_blocked(store)
        if not blocked and not unblocked:
            return


# ---- add / list / get ---------------------------------------------------------------------------
def test_added_cards_can_be_listed_and_read_back(store: CardStore) -> None:
    # Given
    store.add_cards([spec("A", priority=3, labels=["x"], acceptance_criteria=["works"]),
                     spec("B", priority=9, depends_on=["A"], squad="backend", time_limit=60)])
    # When
    cards = store.list_cards()
    b = store.get_card("B")
    # Expect
    assert [c.card_id for c in cards] == ["B", "A"]
    assert (b.status, b.attempts, b.progress, b.depends_on, b.squad, b.time_limit) == (
        Status.TODO, 0, 0, ["A"], "backend", 60)
    assert b.created_at is not None and b.created_at.tzinfo is not None
    assert store.get_card("A").labels == ["x"]
    assert [c.card_id for c in store.list_cards(squad="backend")] == ["B"]
    assert [c.card_id for c in store.list_cards(status="TODO", limit=1, offset=1)] == ["A"]


def test_unknown_card_is_not_found(store: CardStore) -> None:
    with pytest.raises(NotFoundError, match="unknown card 'nope'"):
        store.get_card("nope")


def test_adding_an_existing_id_is_a_conflict_and_writes_nothing(store: CardStore) -> None:
    store.add_cards([spec("A")])
    with pytest.raises(DuplicateCardError, match="card A: already exists") as info:
        store.add_cards([spec("NEW"), spec("A", title="changed")])
    assert info.value.card_ids == ["A"]
    assert [c.card_id for c in store.list_cards()] == ["A"]
    assert store.get_card("A").title == "title of A"


def test_a_batch_with_an_unknown_dependency_writes_nothing(store: CardStore) -> None:
    with pytest.raises(BacklogError) as info:
        store.add_cards([spec("A"), spec("B", depends_on=["A"]), spec("C", depends_on=["GHOST"])])
    assert info.value.problems == ["card C: depends_on unknown card 'GHOST'"]
    assert store.list_cards() == []


def test_a_batch_depending_on_cards_already_stored_is_accepted(store: CardStore) -> None:
    store.add_cards([spec("A")])
    assert store.add_cards([spec("B", depends_on=["A"])]) == (["B"], [])


def test_a_dependency_cycle_through_stored_cards_is_rejected_and_rolled_back(store: CardStore) -> None:
    # Given A <- B in the store
    store.add_cards([spec("A"), spec("B", depends_on=["A"])])
    # When A is rewritten to depend on B, together with a new card
    with pytest.raises(BacklogError, match="cycle"):
        store.add_cards([spec("A", depends_on=["B"]), spec("C")], update_existing=True)
    # Expect nothing changed
    assert store.get_card("A").depends_on == []
    assert {c.card_id for c in store.list_cards()} == {"A", "B"}


def test_update_rewrites_todo_cards_and_adds_new_ones(store: CardStore) -> None:
    store.add_cards([spec("A", priority=1)])
    added = store.add_cards([spec("A", title="new title", priority=8), spec("B")], update_existing=True)
    assert added == (["B"], ["A"])
    a = store.get_card("A")
    assert (a.title, a.priority, a.status) == ("new title", 8, Status.TODO)


def test_update_refuses_cards_that_are_no_longer_todo_and_writes_nothing(store: CardStore) -> None:
    # Given A is QUEUED and T is TODO
    store.add_cards([spec("A"), spec("T")])
    queue(store, "A")
    # When both are updated in one batch
    with pytest.raises(BacklogError) as info:
        store.add_cards([spec("A", title="x"), spec("T", title="x")], update_existing=True)
    # Expect one problem for A and no change to T either
    assert info.value.problems == ["card A: is QUEUED, only TODO cards can be updated"]
    assert store.get_card("T").title == "title of T"
    assert store.get_card("A").title == "title of A"


# ---- compare-and-set transitions ----------------------------------------------------------------
def test_transition_is_compare_and_set_on_the_expected_status(store: CardStore) -> None:
    store.add_cards([spec("A")])
    assert store.enqueue("A", "t1", expected=[Status.TODO]) is True
    # a second producer that also saw TODO loses
    assert store.enqueue("A", "t2", expected=[Status.TODO]) is False
    assert store.get_card("A").celery_task_id == "t1"


def test_transition_to_a_status_not_allowed_from_the_current_one_does_nothing(store: CardStore) -> None:
    store.add_cards([spec("A")])
    assert store.transition("A", Status.DONE) is False
    assert store.transition("A", Status.IN_PROGRESS) is False
    assert status_of(store, "A") == Status.TODO


def race_claims(url: str, worker: str, card_ids: list[str], barrier: Any, results: Any) -> None:
    """Child process: claim every card right after the other racer is ready too."""
    s = CardStore(url, migrate=False)
    won: list[str] = []
    for card_id in card_ids:
        barrier.wait(timeout=60)
        if s.claim(card_id, f"task-{card_id}", worker, 30) is not None:
            won.append(card_id)
    s.dispose()
    results.put((worker, won))


def test_two_processes_racing_to_claim_the_same_queued_card_never_both_win(store: CardStore, db_url: str) -> None:
    # Given 50 QUEUED cards, each with one task id (a message delivered twice)
    ids = [f"R{i:02d}" for i in range(RACE_ROUNDS)]
    store.add_cards([spec(i) for i in ids])
    for card_id in ids:
        assert store.enqueue(card_id, f"task-{card_id}", expected=[Status.TODO])
    # When two OS processes claim each card at the same moment
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=race_claims, args=(db_url, w, ids, barrier, results)) for w in ("w1", "w2")]
    for p in procs:
        p.start()
    outcome = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    # Expect exactly one winner for every card, one run each, attempt 1
    for card_id in ids:
        winners = [w for w, won in outcome.items() if card_id in won]
        assert len(winners) == 1, (card_id, winners)
    cards = store.get_cards(ids)
    assert all(c.status == Status.IN_PROGRESS and c.attempts == 1 for c in cards.values())
    assert all(len(store.list_runs(i)) == 1 for i in ids)
    assert len(outcome["w1"]) + len(outcome["w2"]) == RACE_ROUNDS


def test_a_redelivered_message_cannot_claim_a_card_twice(store: CardStore) -> None:
    store.add_cards([spec("A")])
    task = queue(store, "A")
    assert store.claim("A", task, "w1", 30) is not None
    assert store.claim("A", task, "w2", 30) is None
    assert len(store.list_runs("A")) == 1


def test_a_stale_task_id_cannot_claim_the_card(store: CardStore) -> None:
    # Given A was re-enqueued under a new task id (its first message was thought lost)
    store.add_cards([spec("A")])
    old = queue(store, "A")
    assert store.replace_task("A", old, "new-task")
    # Expect the old message to do nothing and the new one to claim
    assert store.claim("A", old, "w1", 30) is None
    claim = store.claim("A", "new-task", "w2", 30)
    assert claim is not None and claim.attempt == 1
    assert store.get_card("A").status == Status.IN_PROGRESS


def test_claim_opens_a_run_with_attempt_task_and_worker(store: CardStore) -> None:
    store.add_cards([spec("A")])
    task = queue(store, "A")
    claim = store.claim("A", task, "worker-7", 30)
    assert claim is not None
    (run,) = store.list_runs("A")
    assert (run.attempt, run.task_id, run.worker, run.status, run.ended_at) == (1, task, "worker-7", "running", None)
    state = store.execution_state("A")
    assert state["claim_token"] == claim.token and state["lease_expires_at"] > time.time()


# ---- finish: DONE / RETRYING / FAILED -----------------------------------------------------------
def test_a_successful_attempt_makes_the_card_done_and_archives_the_run(store: CardStore) -> None:
    store.add_cards([spec("A")])
    claim = start(store, "A")
    assert finish(store, claim, ok=True, cost=0.25) == Status.DONE
    card = store.get_card("A")
    assert (card.status, card.progress, card.last_error) == (Status.DONE, 100, None)
    (run,) = store.list_runs("A")
    assert (run.status, run.exit_code, run.cost_usd, run.log_available) == ("succeeded", 0, 0.25, True)
    assert store.run_log(run.id) == "line one\nline two"
    assert store.execution_state("A")["claim_token"] is None


def test_a_failed_attempt_with_retries_left_is_retrying_never_failed(store: CardStore) -> None:
    store.add_cards([spec("A")])
    claim = start(store, "A")
    assert finish(store, claim, ok=False, max_retries=1) == Status.RETRYING
    card = store.get_card("A")
    assert card.status == Status.RETRYING and card.last_error == "exit 3"
    next_at = store.execution_state("A")["next_attempt_at"]
    assert next_at is not None and next_at > time.time() + 50
    assert store.due_retries() == []
    assert store.due_retries(now=next_at + 1) == ["A"]


def test_retries_are_spent_after_max_retries_then_failed(store: CardStore) -> None:
    # Given max_retries=2: attempts 1 and 2 fail → RETRYING; attempt 3 fails → FAILED
    store.add_cards([spec("A")])
    seen = []
    for _ in range(3):
        claim = start(store, "A")
        seen.append(finish(store, claim, ok=False, max_retries=2))
    assert seen == [Status.RETRYING, Status.RETRYING, Status.FAILED]
    card = store.get_card("A")
    assert (card.status, card.attempts) == (Status.FAILED, 3)
    assert [r.attempt for r in store.list_runs("A")] == [1, 2, 3]
    assert all(r.status == "failed" and r.exit_code == 3 for r in store.list_runs("A"))


def test_a_manual_retry_of_a_failed_card_restarts_its_retry_budget(store: CardStore) -> None:
    # Given a card that spent its only retry (max_retries=1) and is FAILED
    store.add_cards([spec("A")])
    assert [finish(store, start(store, "A"), ok=False, max_retries=1) for _ in range(2)] == [
        Status.RETRYING, Status.FAILED]
    # When the user retries it by hand (fresh budget) and it fails again
    assert store.enqueue("A", "manual-1", expected=[Status.FAILED], fresh_retries=True)
    claim = store.claim("A", "manual-1", "w1", 30)
    assert claim is not None and (claim.attempt, claim.retry_index) == (3, 0)
    # Expect an automatic retry again, then FAILED once that one is spent too
    assert finish(store, claim, ok=False, max_retries=1) == Status.RETRYING
    assert finish(store, start(store, "A"), ok=False, max_retries=1) == Status.FAILED
    assert [r.attempt for r in store.list_runs("A")] == [1, 2, 3, 4]


def test_a_non_retryable_failure_fails_at_once(store: CardStore) -> None:
    store.add_cards([spec("A")])
    assert finish(store, start(store, "A"), ok=False, max_retries=5, retryable=False) == Status.FAILED


def test_a_spent_budget_stops_further_retries(store: CardStore) -> None:
    # Given a budget of 1 USD and an attempt that cost 0.6 then one that cost 0.5
    store.add_cards([spec("A")])
    assert finish(store, start(store, "A"), ok=False, max_retries=5, cost=0.6, budget=1.0) == Status.RETRYING
    assert finish(store, start(store, "A"), ok=False, max_retries=5, cost=0.5, budget=1.0) == Status.FAILED
    card = store.get_card("A")
    assert "budget" in (card.last_error or "")
    assert store.total_cost() == pytest.approx(1.1)


def test_the_previous_session_id_reaches_the_next_claim(store: CardStore) -> None:
    store.add_cards([spec("A")])
    claim = start(store, "A")
    assert claim.previous_session_id is None
    store.finish(claim, RunOutcome(succeeded=False, error="rate limit", usage=Usage(
        session_id="sess-1", num_turns=4, input_tokens=10, output_tokens=20)), RetryPolicy.fixed(3))
    again = start(store, "A")
    assert (again.attempt, again.previous_session_id) == (2, "sess-1")
    first = store.list_runs("A")[0]
    assert (first.session_id, first.num_turns, first.input_tokens, first.output_tokens) == ("sess-1", 4, 10, 20)


# ---- cancel and lost claims ---------------------------------------------------------------------
def test_cancelling_a_running_card_takes_its_claim_away(store: CardStore) -> None:
    # Given A is IN_PROGRESS under a claim
    store.add_cards([spec("A")])
    claim = start(store, "A")
    assert store.renew_lease("A", claim.token, 30) is True
    # When the user cancels it
    assert store.cancel("A").status == Status.CANCELLED
    # Expect the worker's lease renewal to fail and its late finish to leave the card CANCELLED
    assert store.renew_lease("A", claim.token, 30) is False
    assert store.claim_alive("A", claim.token) is False
    assert finish(store, claim, ok=False, max_retries=3) is None
    assert status_of(store, "A") == Status.CANCELLED
    assert store.list_runs("A")[0].ended_at is not None


@pytest.mark.parametrize("setup", ["todo", "queued", "retrying", "failed", "blocked"])
def test_every_unsettled_card_can_be_cancelled(store: CardStore, setup: str) -> None:
    store.add_cards([spec("D"), spec("A", depends_on=["D"] if setup == "blocked" else [])])
    if setup == "queued":
        queue(store, "A")
    elif setup in ("retrying", "failed"):
        finish(store, start(store, "A"), ok=False, max_retries=1 if setup == "retrying" else 0)
    elif setup == "blocked":
        finish(store, start(store, "D"), ok=False)
        settle_blocked(store)
        assert status_of(store, "A") == Status.BLOCKED
    assert store.cancel("A").status == Status.CANCELLED


@pytest.mark.parametrize("final", [Status.DONE, Status.CANCELLED])
def test_cancelling_a_done_or_cancelled_card_is_a_transition_error(store: CardStore, final: Status) -> None:
    store.add_cards([spec("A")])
    if final == Status.DONE:
        finish(store, start(store, "A"), ok=True)
    else:
        store.cancel("A")
    with pytest.raises(TransitionError):
        store.cancel("A")


def test_a_claim_whose_lease_ran_out_is_found_and_lost_to_a_retry(store: CardStore) -> None:
    # Given A IN_PROGRESS with a lease that is not renewed
    store.add_cards([spec("A")])
    claim = start(store, "A", lease_s=0.5)
    assert store.stale_claims() == []
    # When the lease has run out and the sweeper loses the claim
    stale = store.stale_claims(now=time.time() + 1)
    assert stale == [("A", claim.token)]
    assert store.lose_claim("A", claim.token, "worker lost", RetryPolicy.fixed(3),
                            now=time.time() + 1) == Status.RETRYING
    # Expect the run failed with `worker lost`, the card retried, and the old worker locked out
    (run,) = store.list_runs("A")
    assert (run.error, run.ended_at is not None) == ("worker lost", True)
    assert store.get_card("A").last_error == "worker lost"
    assert store.renew_lease("A", claim.token, 30) is False
    assert finish(store, claim, ok=True) is None
    assert status_of(store, "A") == Status.RETRYING


def test_losing_a_claim_with_no_retries_left_fails_the_card(store: CardStore) -> None:
    store.add_cards([spec("A")])
    claim = start(store, "A")
    assert store.lose_claim("A", claim.token, "worker lost", RetryPolicy.fixed(0),
                            now=time.time() + 60) == Status.FAILED


def test_losing_a_claim_of_a_card_over_its_cost_budget_fails_it_instead_of_retrying(store: CardStore) -> None:
    # Given A whose first attempt failed after spending 2 USD, now running again
    store.add_cards([spec("A")])
    assert finish(store, start(store, "A"), ok=False, max_retries=3, cost=2.0) == Status.RETRYING
    assert store.enqueue("A", "t-2", expected=[Status.RETRYING])
    claim = store.claim("A", "t-2", "w@test", 30)
    assert claim is not None
    # When its worker is lost, with a budget of 1 USD and retries left
    new = store.lose_claim("A", claim.token, "worker lost", RetryPolicy.fixed(3, budget_usd=1.0),
                           now=time.time() + 60)
    # Expect the same verdict as a failed attempt over budget: FAILED, with the note
    assert new == Status.FAILED
    assert store.get_card("A").last_error == "worker lost (budget 1.0 USD spent)"


def test_a_lease_renewed_after_it_was_found_stale_is_not_lost(store: CardStore) -> None:
    # Given A whose lease was found stale, then renewed by its (slow but alive) worker
    store.add_cards([spec("A")])
    claim = start(store, "A", lease_s=0.5)
    assert store.stale_claims(now=time.time() + 1) == [("A", claim.token)]
    assert store.renew_lease("A", claim.token, 30)
    # When the sweeper acts on what it found
    lost = store.lose_claim("A", claim.token, "worker lost", RetryPolicy.fixed(3))
    # Expect nothing lost: the worker keeps its card and its open run
    assert lost is None
    assert store.claim_alive("A", claim.token)
    assert [r.status for r in store.list_runs("A")] == ["running"]


def test_a_late_finish_cannot_overwrite_a_run_the_sweeper_closed_as_lost(store: CardStore) -> None:
    # Given A swept as `lost` (its worker froze past the lease) and re-run by a second claim
    store.add_cards([spec("A")])
    frozen = start(store, "A", lease_s=0.5)
    assert store.lose_claim("A", frozen.token, "worker lost", RetryPolicy.fixed(3),
                            now=time.time() + 1) == Status.RETRYING
    second = start(store, "A")
    # When the frozen worker resumes and reports its outcome
    late = finish(store, frozen, ok=True, cost=2.0)
    # Expect its write rejected: run 1 stays lost, run 2 running, the card owned by the second claim
    assert late is None
    assert [(r.attempt, r.status, r.error) for r in store.list_runs("A")] == [
        (1, "lost", "worker lost"), (2, "running", None)]
    assert store.run_log(frozen.run_id) == ""
    assert store.claim_alive("A", second.token)
    assert store.renew_lease("A", frozen.token, 30) is False
    assert finish(store, second, ok=True) == Status.DONE


def test_losing_a_claim_with_a_wrong_token_does_nothing(store: CardStore) -> None:
    store.add_cards([spec("A")])
    claim = start(store, "A")
    assert store.lose_claim("A", "not-the-token", "worker lost", RetryPolicy.fixed(3)) is None
    assert store.claim_alive("A", claim.token)


# ---- scheduling queries -------------------------------------------------------------------------
def test_ready_cards_are_most_urgent_first_then_oldest(store: CardStore) -> None:
    # Given cards added one after another (so their ages differ); ids chosen against age order
    for card_id, priority in [("Z-old", 5), ("M-mid", 0), ("A-new", 5), ("P9", 9)]:
        store.add_cards([spec(card_id, priority=priority)])
        time.sleep(0.01)
    # Expect priority 9 first, then by age within a priority
    assert ready_cards(store) == ["P9", "Z-old", "A-new", "M-mid"]
    assert ready_cards(store, limit=2) == ["P9", "Z-old"]


def test_a_card_is_ready_only_when_every_dependency_is_done(store: CardStore) -> None:
    store.add_cards([spec("A"), spec("B"), spec("C", depends_on=["A", "B"], priority=9)])
    assert ready_cards(store) == ["A", "B"]
    finish(store, start(store, "A"), ok=True)
    assert ready_cards(store) == ["B"]
    finish(store, start(store, "B"), ok=True)
    assert ready_cards(store) == ["C"]


def test_dependants_of_a_failed_card_are_blocked_and_released_when_it_is_retried(store: CardStore) -> None:
    # Given B depends on A, C on B
    store.add_cards([spec("A"), spec("B", depends_on=["A"]), spec("C", depends_on=["B"])])
    # When A FAILS
    finish(store, start(store, "A"), ok=False, max_retries=0)
    settle_blocked(store)
    # Expect B and C BLOCKED
    assert (status_of(store, "B"), status_of(store, "C")) == (Status.BLOCKED, Status.BLOCKED)
    assert ready_cards(store) == []
    # When A is retried by the user (FAILED → QUEUED)
    queue(store, "A")
    settle_blocked(store)
    # Expect B and C back to TODO (not yet ready: A is not DONE)
    assert (status_of(store, "B"), status_of(store, "C")) == (Status.TODO, Status.TODO)
    assert ready_cards(store) == []


def test_a_cancelled_dependency_blocks_its_dependants(store: CardStore) -> None:
    store.add_cards([spec("A"), spec("B", depends_on=["A"])])
    store.cancel("A")
    assert update_blocked(store) == (["B"], [])
    assert status_of(store, "B") == Status.BLOCKED


def test_a_retrying_dependency_does_not_block(store: CardStore) -> None:
    store.add_cards([spec("A"), spec("B", depends_on=["A"])])
    finish(store, start(store, "A"), ok=False, max_retries=2)
    assert update_blocked(store) == ([], [])
    assert status_of(store, "B") == Status.TODO


def test_a_pass_reads_only_waiting_cards_and_their_dependencies(store: CardStore) -> None:
    # Given a DONE history, a chain waiting on it and a card waiting on a running one
    store.add_cards([spec("OLD"), spec("A"), spec("B", depends_on=["A", "OLD"]), spec("R"),
                     spec("W", depends_on=["R"])])
    finish(store, start(store, "OLD"), ok=True)
    start(store, "R")
    # When the orchestrator's kept graph reads them
    graph = PassGraph(store).refresh()
    graph.decide()
    # Expect waiting cards with their dependencies' statuses, and the same decisions as the full graph
    assert set(graph.waiting) | set(graph.dep_status) == {"A", "B", "W", "OLD", "R"}
    assert (graph.status_of("OLD"), graph.status_of("R")) == ("DONE", "IN_PROGRESS")
    assert graph.ready_ids() == ready_cards(store) == ["A"]
    finish(store, start(store, "A"), ok=True)
    graph = PassGraph(store).refresh()
    graph.decide()
    assert set(graph.waiting) | set(graph.dep_status) == {"B", "W", "A", "OLD", "R"}
    assert graph.ready_ids() == ["B"]


def test_enqueue_many_queues_each_todo_card_under_its_own_task_id_and_skips_moved_ones(store: CardStore) -> None:
    # Given three TODO cards, one of which another process cancels before the batch
    store.add_cards([spec("P", priority=9), spec("Q"), spec("X")])
    store.cancel("X")
    # When
    queued = store.enqueue_many(["P", "Q", "X"], session="s1")
    # Expect P and Q QUEUED in the caller's order, each claimable only by its own new task id
    assert [q[0] for q in queued] == ["P", "Q"]
    (_p, p_task, p_prio, *_), (_q, q_task, *_) = queued
    assert p_task != q_task and p_prio == 9
    assert store.get_card("P").celery_task_id == p_task and status_of(store, "X") == Status.CANCELLED
    assert store.claim("P", q_task, "w1", 30) is None
    assert store.claim("P", p_task, "w1", 30) is not None
    # And a second batch finds nothing left to queue
    assert store.enqueue_many(["P", "Q"]) == []


def test_a_backlog_larger_than_the_postgresql_parameter_limit_is_added_and_queued(pg_url: str) -> None:
    # Given 66,000 cards: one IN list of their ids alone would exceed PostgreSQL's 65,535 parameters
    store = CardStore(pg_url)
    n = 66_000
    specs = [CardSpec(card_id=f"K{i}", title="t") for i in range(n)]
    try:
        # When
        assert store.add_cards(specs) == ([s.card_id for s in specs], [])
        graph = PassGraph(store).refresh()
        graph.decide()
        queued = store.enqueue_many(graph.ready_ids())
        # Expect every card stored and queued, and a second import refused whole
        assert len(queued) == n and store.count_by_status()["QUEUED"] == n
        with pytest.raises(DuplicateCardError):
            store.add_cards(specs)
    finally:
        store.dispose()


def test_stale_queued_cards_are_those_queued_longer_than_the_threshold(store: CardStore) -> None:
    store.add_cards([spec("A")])
    task = queue(store, "A")
    assert store.stale_queued(60) == []
    assert store.stale_queued(60, now=time.time() + 61) == [("A", task)]


def test_counts_cover_every_status(store: CardStore) -> None:
    store.add_cards([spec("A"), spec("B"), spec("C")])
    queue(store, "B")
    finish(store, start(store, "C"), ok=True)
    counts = store.count_by_status()
    assert set(counts) == {s.value for s in Status}
    assert (counts["TODO"], counts["QUEUED"], counts["DONE"], counts["FAILED"]) == (1, 1, 1, 0)
    assert store.active_count() == 2 and store.in_flight() == 1


# ---- migrations ---------------------------------------------------------------------------------
def _head() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(squad.store.card_store.__file__).parent / "migrations"))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def test_schema_head_names_the_newest_migration() -> None:
    # `store.peek` (squad status without SQLAlchemy) reads a store only when its revision is this one
    from squad.store.head import SCHEMA_HEAD
    from squad.store.tables import SCHEMA_HEAD as TABLES_HEAD

    assert SCHEMA_HEAD == TABLES_HEAD == _head()


def test_opening_the_store_twice_keeps_the_data_and_the_schema_at_head(db_url: str) -> None:
    first = CardStore(db_url)
    first.add_cards([spec("A")])
    first.dispose()
    second = CardStore(db_url)
    assert second.get_card("A").title == "title of A"
    with second.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == _head()
    second.dispose()


def test_several_processes_opening_a_fresh_store_at_once_all_succeed(db_url: str) -> None:
    # Given a database nobody has opened yet; When 3 processes open (and migrate) it at the same moment
    code = ("import sys; from squad.store.card_store import CardStore; s = CardStore(sys.argv[1]); "
            "print(len(s.list_cards())); s.dispose()")
    procs = [subprocess.Popen([sys.executable, "-c", code, db_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    results = [p.communicate(timeout=120) for p in procs]
    # Expect every one to succeed with one schema at head
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == "0"
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == _head()
        assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
    engine.dispose()


def test_the_migrated_schema_matches_the_table_definitions(store: CardStore) -> None:
    # The alembic head must create exactly the tables, columns and indexes of squad.store.tables.
    with store.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        tables = set(sa.inspect(conn).get_table_names()) - {"alembic_version"}
    assert diffs == []
    assert tables == set(metadata.tables)


def test_landing_lines_append_to_a_runs_archived_log_and_a_reason_to_stay_landing_is_noted_once(
        store: CardStore) -> None:
    store.add_cards([spec("L"), spec("E")])
    claim = start(store, "L")
    outcome = RunOutcome(succeeded=True, error=None, exit_code=0, log="line one\nline two")
    assert store.finish(claim, outcome, RetryPolicy.fixed(0, delay_s=60), land=True) == Status.LANDING
    store.append_run_log(claim.run_id, "landing one")
    store.append_run_log(claim.run_id, "")  # nothing to add: unchanged
    store.append_run_log(claim.run_id, "landed 0123456789ab on main\n[after_land] ok")
    assert store.run_log(claim.run_id) == ("line one\nline two\nlanding one\n"
                                           "landed 0123456789ab on main\n[after_land] ok")
    # a run whose attempt left no log: the landing's lines are the whole log, without a blank first line
    empty = start(store, "E")
    store.finish(empty, RunOutcome(succeeded=True, error=None, exit_code=0, log=""), RetryPolicy.fixed(0, delay_s=60),
                 land=True)
    store.append_run_log(empty.run_id, "landing E")
    assert store.run_log(empty.run_id) == "landing E"
    assert store.note_landing("L", "cannot land: why")
    assert not store.note_landing("L", "cannot land: why")  # said once, not on every pass
    assert store.note_landing("L", "cannot land: another reason")
    assert store.get_card("L").last_error == "cannot land: another reason"
    assert store.landed("L") and not store.note_landing("L", "cannot land: why")  # no longer LANDING
