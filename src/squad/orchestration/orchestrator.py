"""Ready-card selection, enqueueing by priority, retries when due, and the session loop.

The orchestrator decides *which* cards go and *when*; how they are sent (Celery message, local
thread, deferred) is `squad.orchestration.dispatch`, through its `Producer`. It never imports the worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from squad.attempt.landing import land_ready
from squad.attempt.lease import sweep_stale_leases
from squad.attempt.subcards import settle_waiting
from squad.core.settings import Settings
from squad.core.statuses import FINAL, Status
from squad.live.events import EventBus, try_event_bus
from squad.orchestration.dispatch import CeleryDispatcher, Dispatcher, LocalDispatcher, Producer, execution_mode
from squad.orchestration.pass_graph import PassGraph
from squad.store.card_store import CardStore

log = structlog.get_logger(__name__)
EXIT_TIMEOUT = 124  # `--timeout` reached (the code GNU `timeout` uses)
REQUEUE_CHECK_S = 5.0  # lost-message check (reads queued messages back) at most this often
FAMILY_CHECK_S = 1.0  # WAITING parents looked at at most this often (their attempts settle them first)
WAKE_CHECK_S = 0.5  # longest block on the event stream before looking at the stop flag again
#: of the statuses that wake a pass (`events.WAKE_STATUSES`), the final ones: they matter to a pass
#: only through the graph (see `Orchestrator.relevant`)
FINAL_STATUSES = frozenset(s.value for s in FINAL)


@dataclass
class TickResult:
    """What one orchestrator pass did."""

    released: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)


class Orchestrator:
    """Moves ready cards into execution and keeps the store and the queue consistent."""

    def __init__(self, settings: Settings, store: CardStore, dispatcher: Dispatcher,
                 events: EventBus | None = None, *, session: str = "default",
                 max_in_flight: int | None = None) -> None:
        self.settings, self.store = settings, store
        self.producer = Producer(settings, store, dispatcher, events, session=session)
        self.max_in_flight = max_in_flight
        self.stopping = threading.Event()
        self.fallback_reason: str | None = None  # why auto mode runs cards locally
        self._last_event_id = "$"  # where the wait for status events resumes
        self._next_requeue_check = 0.0
        self._next_family_check = 0.0
        self._pass_due = True  # a pass failed or has not run yet: the next wake-up runs one
        self.finals_seen = 0  # final status events read by `wait_for_change`
        self.pass_graph = PassGraph(store)  # waiting cards and their dependencies, kept between passes
        self._lander: threading.Thread | None = None  # lands LANDING cards nobody else lands

    @classmethod
    def for_producer(cls, producer: Producer) -> Orchestrator:
        """An orchestrator that queues through an existing producer (e.g. `submit(release=True)`)."""
        orch = cls(producer.settings, producer.store, producer.dispatcher, producer.events,
                   session=producer.session)
        orch.producer = producer
        return orch

    @property
    def dispatcher(self) -> Dispatcher:
        """Where this orchestrator's cards go."""
        return self.producer.dispatcher

    @property
    def events(self) -> EventBus | None:
        """The event stream (None without Redis)."""
        return self.producer.events

    # ---- one pass ---------------------------------------------------------------------------
    def tick(self, *, release: bool = True) -> TickResult:
        """One pass: block/unblock, sweep stale leases, retry due cards, requeue lost, release ready."""
        res = TickResult()
        self._pass_due = True  # until this pass completes
        graph = self.pass_graph.refresh()  # the cards written since the last pass, not every waiting card
        to_block, to_release = graph.decide()
        blocked, unblocked = self.store.apply_blocked(to_block, to_release)
        res.blocked = blocked
        for cid in blocked:
            self.pass_graph.moved(cid, Status.BLOCKED)
            self._status_event(cid, Status.BLOCKED)
        for cid in unblocked:
            self.pass_graph.moved(cid, Status.TODO)
            self._status_event(cid, Status.TODO)
        self.pass_graph.recheck(sorted(set(to_block + to_release) - set(blocked + unblocked)))
        res.lost = sweep_stale_leases(self.settings, self.store, self.events)
        if time.monotonic() >= self._next_family_check:  # parents whose sub-cards ended (safety net)
            self._next_family_check = time.monotonic() + FAMILY_CHECK_S
            settle_waiting(self.store, self.events)
        for card_id in self.store.due_retries():
            if self._send(card_id, expected=[Status.RETRYING]):
                res.retried.append(card_id)
        now = time.monotonic()
        # Celery: reads queued messages back, so not on every reaction; local: an in-memory check
        # that also adopts cards queued by other processes, so every pass.
        if self.dispatcher.mode == "local" or now >= self._next_requeue_check:
            self._next_requeue_check = now + REQUEUE_CHECK_S
            res.requeued = self.requeue_lost()
        self._land_in_background()
        if release:
            budget = None
            if self.max_in_flight is not None:
                budget = max(0, self.max_in_flight - self.store.in_flight())
            res.released = self._release(graph.ready_ids(budget))
        self._pass_due = False
        return res

    def _land_in_background(self) -> None:
        """Cards in LANDING that no lander took (approved by hand, or their lander died: its train's
        lease ran out) are landed by a thread of this process, one at a time (docs/workspaces.md)."""
        if self._lander is not None and self._lander.is_alive():
            return
        if self.store.count_cards(status=Status.LANDING.value) == 0:
            return

        def land() -> None:
            try:
                land_ready(self.settings, self.store, self.events, worker="orchestrator")
            except Exception as exc:  # the next pass tries again
                log.warning("landing pass failed", error=str(exc))

        self._lander = threading.Thread(target=land, daemon=True, name="lander")
        self._lander.start()

    def relevant(self, card_id: str, status: str) -> bool:
        """Whether a status event can change what a pass does, judged from the kept graph alone.

        TODO and RETRYING always can (a new card, a card waiting again, a retry that may be due).
        A final status (DONE, FAILED, CANCELLED) only of a card the graph holds: one that waits, or
        one that cards wait on. Anything else a pass looks at is time-based (stale leases, due
        retries, lost messages), and the safety-net poll covers it.
        """
        if status not in FINAL_STATUSES:
            return True
        graph = self.pass_graph.graph
        return card_id in graph.dependants or card_id in graph.waiting

    def pass_needed(self) -> bool:
        """Whether the next wake-up must run a pass: the last one failed, cards found ready were
        held back (`max_in_flight`: a card settling frees a slot), or cards must be read again."""
        return self._pass_due or bool(self.pass_graph.graph.ready) or self.pass_graph.pending()

    def _release(self, card_ids: list[str]) -> list[str]:
        """Queue ready cards: one store transaction, one broker connection, one event pipeline."""
        if not card_ids:
            return []
        graph = self.pass_graph.graph  # release only as the graph read them: unchanged, dependencies DONE
        as_read = {cid: (graph.stamps[cid], graph.waiting[cid][1]) for cid in card_ids}
        queued = self.store.enqueue_many(card_ids, session=self.producer.session, as_read=as_read)
        for card in queued:
            self.pass_graph.moved(card.card_id, Status.QUEUED)
        self.pass_graph.recheck(sorted(set(card_ids) - {card.card_id for card in queued}))
        return self.producer.send_many(queued)

    def requeue_lost(self) -> list[str]:
        """QUEUED too long with no live message (e.g. Redis lost its data): send again."""
        after = self.settings.requeue_after
        if self.dispatcher.mode == "local":
            after = 0.0  # a local queue lives in this process: anything not ours is orphaned
        stale = [(cid, tid) for cid, tid in self.store.stale_queued(after) if tid]
        if not stale:
            return []
        # A message some consumer took as long ago as the card waits, without claiming it, is gone too.
        alive = self.dispatcher.live_task_ids([tid for _cid, tid in stale], held_for_s=after)
        requeued: list[str] = []
        for card_id, task_id in stale:
            if task_id in alive:
                continue
            if self.producer.resend(card_id, task_id):
                log.warning("re-enqueueing card whose message is gone", card_id=card_id, old_task_id=task_id)
                requeued.append(card_id)
        return requeued

    def _send(self, card_id: str, *, expected: list[Status]) -> bool:
        return self.producer.send(card_id, expected=expected) is not None

    def _status_event(self, card_id: str, status: Status, task_id: str | None = None) -> None:
        self.producer.status_event(card_id, status, task_id)

    # ---- loop -------------------------------------------------------------------------------
    def run(self, *, once: bool = False, wait: bool = False, interval: float = 1.0, timeout: float | None = None,
            on_wait: Callable[[], None] | None = None) -> int:
        """Run passes until stopped; `--once` alone does one pass; with `--wait`, until settled, or
        `timeout` seconds (then `EXIT_TIMEOUT`); `on_wait` is called after each pass while waiting."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.events is not None and self._last_event_id == "$":
            try:  # before the first pass: a card settling during it must still wake the next wait
                self._last_event_id = self.events.settled_position()
            except Exception as exc:
                log.warning("cannot read the event stream; polling only", error=f"{type(exc).__name__}: {exc}")
        run_pass = True
        next_poll = 0.0
        # --wait: the active cards at the last count. Only a final status event takes a card out of
        # the active set without a pass, so the store is counted again after a pass, or once as many
        # final events came as there were active cards (deletions etc.: the poll's pass counts).
        active = 0
        self.finals_seen = 0
        while not self.stopping.is_set():
            if run_pass:
                next_poll = time.monotonic() + interval  # the safety-net poll: a pass at least this often
                try:
                    self.tick()
                except Exception as exc:  # a Redis/broker or database blip must not end the loop
                    if once and not wait:
                        raise
                    log.warning("orchestrator pass failed; retrying next pass",
                                error=f"{type(exc).__name__}: {exc}")
            if once and not wait:
                return 0
            if wait and (run_pass or self.finals_seen >= active):
                active, self.finals_seen = self.store.active_count(), 0
                if active == 0:
                    counts = self.store.count_by_status()
                    return 1 if counts[Status.FAILED] else 0
            if deadline is not None and time.monotonic() >= deadline:
                self.stop()  # local attempts still running are ended (and retried later)
                return EXIT_TIMEOUT
            if wait and on_wait is not None:
                on_wait()
            until = next_poll if deadline is None else min(next_poll, deadline)
            run_pass = self.wait_for_change(max(0.0, until - time.monotonic()))
        # Stopped by a signal before the cards settled: never report success for unfinished work.
        return 130 if wait else 0

    def stop(self) -> None:
        """Ask the loop to end after the current pass."""
        self.stopping.set()
        if self.dispatcher.settled is not None:
            self.dispatcher.settled.set()

    def wait_for_change(self, interval: float) -> bool:
        """Sleep until an attempt settles (react at once) or `interval` passes (the safety-net poll).
        True: run a pass now. False: cards settled that no pass has anything to do about (the
        caller may look at them, e.g. `--wait` counting active cards), and the poll is not due.

        Local mode: the executor's own signal. Celery mode: a status event on `settled` that a
        worker publishes after its `finish` transaction committed, so the next pass sees the change.
        Every event already in the stream is read at once, so a burst of them makes one pass.
        """
        deadline = time.monotonic() + interval
        settled = self.dispatcher.settled
        if settled is not None:
            settled.wait(interval)
            settled.clear()
            return True
        if self.events is None:
            self.stopping.wait(interval)
            return True
        while not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            try:
                found, self._last_event_id = self.events.wait_status(
                    self._last_event_id, block_s=min(remaining, WAKE_CHECK_S))
            except Exception as exc:  # Redis blip: fall back to the poll
                log.warning("waiting for status events failed", error=f"{type(exc).__name__}: {exc}")
                self.stopping.wait(remaining)
                return True
            # read these cards again next pass whatever their stamp (a writer whose clock lags)
            self.pass_graph.recheck(sorted({cid for cid, status in found if cid and self.relevant(cid, status)}))
            finals = sum(status in FINAL_STATUSES for _cid, status in found)
            self.finals_seen += finals
            if self.pass_needed():
                return True
            if finals:
                return False
        return True


def make_orchestrator(settings: Settings, store: CardStore, *, mode: str = "auto", session: str = "default",
                      max_in_flight: int | None = None, once: bool = False) -> Orchestrator:
    """Build an orchestrator for a mode (auto|celery|local); `fallback_reason` says why auto ran local.

    The mode is decided here, once, for the orchestrator's whole life. In `auto` mode with a broker
    that answers, a long-running orchestrator uses Celery even while no worker consumes the queue
    (workers started after it get the cards; it says meanwhile that none consumes); only a one-shot
    run (`once`: `squad orchestrate --once`) falls back to running the cards itself when no worker
    consumes them, decided again by each invocation.
    """
    actual = execution_mode(settings, mode, need_consumer=once)
    if actual.reason:
        log.info("falling back to local mode", reason=actual.reason)
    events = try_event_bus(settings.events, settings.log_ttl, store.redis_keys)
    dispatcher: Dispatcher
    if actual.name == "celery":
        dispatcher = CeleryDispatcher(settings, store_id=store.instance_id)
    else:
        dispatcher = LocalDispatcher(settings, store, events, concurrency=max_in_flight or 4)
    orch = Orchestrator(settings, store, dispatcher, events, session=session, max_in_flight=max_in_flight)
    orch.fallback_reason = actual.reason
    return orch
