"""A running attempt's claim: renewed while it runs (one renewer thread per process), watched for a
cancel or a take-over (fencing), and swept when its worker stopped renewing it (`worker lost`).
"""

from __future__ import annotations

import os
import threading
import time

import structlog
from sqlalchemy.exc import DBAPIError

from squad.attempt.archive import DISK_FULL_LOG_BYTES, live_log_archive, log_tail
from squad.core.constants import CANCEL_POLL_S
from squad.core.retries import RetryPolicy
from squad.core.settings import Settings
from squad.live.events import EventBus, status_event
from squad.store.card_store import CardStore
from squad.store.db_retry import is_disk_full

log = structlog.get_logger(__name__)
RENEWER_IDLE_S = 1.0


LEASE_LOST = "lease lost: the card was taken over by another attempt"


class _LeaseRenewer:
    """One daemon thread per process renews the lease of every attempt running in it.

    It used to be one thread per attempt: starting and joining it (and the GIL hand-offs that go
    with waking it) cost more than a whole agent like `true`. The guarantee is the same: a lease is
    renewed every lease/3 from the claim until `finish`, by a thread other than the attempt's own
    (which can block on Redis for as long as an outage lasts).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keepers: dict[int, LeaseKeeper] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._next_wake = float("inf")

    def add(self, keeper: LeaseKeeper) -> None:
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid, self._next_wake = os.getpid(), float("inf")
                self._thread = threading.Thread(target=self._run, name="lease-renewer", daemon=True)
                self._thread.start()
            self._keepers[id(keeper)] = keeper
            wake = keeper.due < self._next_wake  # usually not: every lease of a process has one length
        if wake:
            self._wake.set()

    def remove(self, keeper: LeaseKeeper) -> None:
        with self._lock:
            self._keepers.pop(id(keeper), None)

    def _run(self) -> None:
        while True:
            with self._lock:
                keepers = list(self._keepers.values())
            now = time.monotonic()
            for keeper in keepers:  # one at a time: they share the process's database anyway
                if keeper.due <= now:
                    try:
                        keeper.renew()
                    except Exception as exc:  # never let one attempt's error end every renewal
                        log.error("lease renewal crashed", card_id=keeper.card_id, error=str(exc))
            with self._lock:
                # Idle, it looks again every RENEWER_IDLE_S: a new attempt's first renewal (lease/3
                # away) rarely needs to wake it, and waking a thread is what this class avoids.
                now = time.monotonic()
                self._next_wake = min((k.due for k in self._keepers.values()), default=now + RENEWER_IDLE_S)
                timeout = max(0.0, self._next_wake - now)
            self._wake.wait(timeout)
            self._wake.clear()

    def after_fork(self) -> None:
        """In a forked child: no renewer thread yet, and no lock held by a thread that is not there."""
        self._lock = threading.Lock()
        self._keepers, self._thread, self._pid, self._next_wake = {}, None, 0, float("inf")
        self._wake = threading.Event()


_RENEWER = _LeaseRenewer()


os.register_at_fork(after_in_child=_RENEWER.after_fork)


class LeaseKeeper:
    """Keeps the claim's lease renewed every lease/3 (by the process's lease renewer) and notices when
    the claim is taken away.

    A claim is taken away by a cancel (the run stays open: the attempt records `cancelled`) or by
    the sweeper after the lease ran out (the run is closed as `lost` and the card re-run): then the
    attempt is fenced: `fenced` is set, its agent is ended and its writes are dropped.
    """

    def __init__(self, store: CardStore, card_id: str, token: str, lease_s: float,
                 shutdown: threading.Event | None = None, *, run_id: int | None = None,
                 fenced: threading.Event | None = None) -> None:
        self.store, self.card_id, self.token, self.lease_s = store, card_id, token, lease_s
        self.shutdown = shutdown
        self.run_id = run_id
        self.fenced = fenced if fenced is not None else threading.Event()
        self.lost = threading.Event()
        self._lock = threading.Lock()  # a renewal in flight finishes before the keeper stops
        self._stopped = False
        self.due = time.monotonic() + lease_s / 3
        self._last_check = time.monotonic()  # the claim was just taken: first check after a poll period

    def __enter__(self) -> LeaseKeeper:
        _RENEWER.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._stopped = True
        _RENEWER.remove(self)

    def renew(self) -> None:
        """One renewal (called by the renewer when due); the claim gone means the lease is lost."""
        with self._lock:
            if self._stopped:
                return
            self.due = time.monotonic() + self.lease_s / 3
            try:
                if not self.store.renew_lease(self.card_id, self.token, self.lease_s):
                    self._stopped = True
                    self._lose()
            except Exception as exc:  # database briefly unreachable: keep trying
                log.warning("lease renewal failed", card_id=self.card_id, error=str(exc))
        if self._stopped:
            _RENEWER.remove(self)

    def _lose(self) -> None:
        """The claim is gone: find out whether the run was closed under us (swept) before saying so."""
        if self.run_id is not None:
            try:
                if not self.store.run_open(self.run_id):
                    self.fenced.set()
            except Exception:  # cannot tell: treat it as taken over, the safe side
                self.fenced.set()
        self.lost.set()

    def stop_reason(self) -> str | None:
        """'cancelled' once the claim is gone (cancel, forced retry), 'lease lost' once swept."""
        if self.lost.is_set():
            return LEASE_LOST if self.fenced.is_set() else "cancelled"
        if self.shutdown is not None and self.shutdown.is_set():
            return "stopped: the executor is shutting down"
        now = time.monotonic()
        if now - self._last_check >= CANCEL_POLL_S:
            self._last_check = now
            try:
                if not self.store.claim_alive(self.card_id, self.token):
                    self._lose()
                    return LEASE_LOST if self.fenced.is_set() else "cancelled"
            except Exception as exc:
                log.warning("claim check failed", card_id=self.card_id, error=str(exc))
        return None


def sweep_stale_leases(settings: Settings, store: CardStore, events: EventBus | None) -> list[str]:
    """Cards whose claim was not renewed for a lease: failed run `worker lost`, then retried.

    The live log the attempt left in Redis becomes the lost run's archive. No lease is judged
    while the database cannot be written (a SQLite file locked by another process still answers
    reads) or less than a lease after this process saw it fail: workers could not renew during
    the outage and get one lease, after it, to do so.
    """
    if not store.ping() or store.failed_within(settings.lease_s):
        return []
    lost: list[str] = []
    for card_id, token in store.stale_claims():
        card = store.get_card(card_id)
        archived = live_log_archive(events, card_id, card.celery_task_id)
        policy = RetryPolicy.for_card(settings, card)
        try:
            new = store.lose_claim(card_id, token, "worker lost", policy, log=archived)
        except DBAPIError as exc:
            if not is_disk_full(exc):
                raise
            new = store.lose_claim(card_id, token, "worker lost", policy, log=log_tail(archived, DISK_FULL_LOG_BYTES))
        if new is not None:
            lost.append(card_id)
            log.warning("stale lease swept", card_id=card_id, new_status=new.value)
            if events is not None:
                events.publish(status_event(card_id, new, card.celery_task_id, attempt=card.attempts,
                                            error="worker lost"))
    return lost
