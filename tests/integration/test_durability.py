"""No lost outcome, no lost log: writes retried through a locked database, head+tail archives,
and the sweeper archiving a lost attempt's live log (real SQLite, real Redis)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from squad.attempt.archive import LogArchive, live_log_archive
from squad.attempt.lease import LeaseKeeper, sweep_stale_leases
from squad.core.cards import CardSpec
from squad.core.retries import RetryPolicy
from squad.core.settings import Settings
from squad.core.statuses import Status
from squad.live.events import EventBus, iso_now
from squad.store.card_store import CardStore, RunOutcome
from squad.store.db_retry import retry_db
from support.processes import wait_for


def _claimed(store: CardStore, card_id: str, lease_s: float = 30):  # type: ignore[no-untyped-def]
    store.add_cards([CardSpec(card_id=card_id, title=f"title of {card_id}")])
    assert store.enqueue(card_id, f"task-{card_id}", expected=[Status.TODO])
    claim = store.claim(card_id, f"task-{card_id}", "w1", lease_s)
    assert claim is not None
    return claim


def test_an_oversized_archive_keeps_its_head_and_its_tail_with_a_marker() -> None:
    # Given an archive capped at 1000 bytes
    archive = LogArchive(max_bytes=1000)
    # When 500 numbered lines of ~20 bytes go through it
    for i in range(500):
        archive.add(f"line {i:04d} ..........")
    text = archive.text()
    # Expect the first and the last lines, a marker saying what was cut, and the cap respected
    lines = text.splitlines()
    assert lines[0] == "line 0000 .........."
    assert lines[-1] == "line 0499 .........."
    marker = next(line for line in lines if line.startswith("[…"))
    kept = [line for line in lines if line.startswith("line ")]
    assert f"{500 - len(kept)} lines" in marker and "cut" in marker
    assert len("\n".join(kept).encode()) <= 1000


def test_a_small_archive_is_kept_whole_without_a_marker() -> None:
    archive = LogArchive(max_bytes=1000)
    for i in range(5):
        archive.add(f"line {i}")
    assert archive.text() == "\n".join(f"line {i}" for i in range(5))


def test_finish_through_a_lock_held_past_the_busy_timeout_is_retried_and_recorded(tmp_path: Path) -> None:
    # Given a running card on SQLite with a 0.3 s busy timeout
    db = tmp_path / "squad.db"
    store = CardStore(f"sqlite:///{db}?timeout=0.3")
    claim = _claimed(store, "A")
    # When another process-like connection holds the write lock for 2 s (well past the busy timeout)
    locker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(2.0, lambda: locker.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    try:
        assert not store.ping()  # meanwhile the store reports itself unusable
        new = retry_db(lambda: store.finish(claim, RunOutcome(succeeded=True, log="the log"),
                                            RetryPolicy.fixed(0)), what="finish", budget_s=30)
    finally:
        release.join()
        locker.close()
    # Expect the outcome recorded once the lock is gone, and the store healthy again
    assert time.monotonic() - started >= 1.5
    assert new == Status.DONE
    (run,) = store.list_runs("A")
    assert (run.status, store.run_log(run.id)) == ("succeeded", "the log")
    assert store.ping()
    store.dispose()


def test_the_sweeper_archives_the_live_log_of_a_lost_attempt(
        tmp_path: Path, redis_url: str, settings: Settings) -> None:
    # Given a running card whose attempt wrote lines to its live log, and a line of another attempt
    store = CardStore(settings.database_url)
    events = EventBus(redis_url, store.redis_keys)
    claim = _claimed(store, "LOST", lease_s=0.2)
    events.append_logs("LOST", "task-LOST", [(iso_now(), "INFO", "step one"), (iso_now(), "ERROR", "the error")])
    events.append_logs("LOST", "another-task", [(iso_now(), "INFO", "not this attempt")])
    # When its lease runs out and the sweeper finds it
    time.sleep(0.4)
    assert sweep_stale_leases(settings, store, events) == ["LOST"]
    # Expect the lost run to keep what the live log held of that attempt
    (run,) = store.list_runs("LOST")
    log = store.run_log(claim.run_id)
    assert run.status == "lost"
    assert "step one" in log and "the error" in log and "not this attempt" not in log
    assert live_log_archive(None, "LOST", "task-LOST") == ""
    events.close()
    store.dispose()


def test_no_lease_is_swept_within_a_lease_after_this_process_saw_the_database_fail(
        tmp_path: Path, redis_url: str, settings: Settings) -> None:
    # Given a card whose lease ran out while the database was unreachable for this process
    store = CardStore(settings.database_url)
    _claimed(store, "OUTAGE", lease_s=0.2)
    time.sleep(0.4)
    store.last_db_error_at = time.monotonic()
    # Expect the sweeper to wait a lease before judging it, then to sweep it
    assert sweep_stale_leases(settings, store, None) == []
    store.last_db_error_at = time.monotonic() - settings.lease_s - 1
    # and while another process holds the write lock (reads still work), nothing is swept either
    db = Path(settings.database_url.removeprefix("sqlite:///"))
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        slow = CardStore(f"sqlite:///{db}?timeout=0.2")
        assert sweep_stale_leases(settings, slow, None) == []
        assert slow.failed_within(settings.lease_s)
    finally:
        locker.execute("COMMIT")
        locker.close()
    assert sweep_stale_leases(settings, store, None) == ["OUTAGE"]
    slow.dispose()
    store.dispose()


def test_every_lease_of_a_process_is_renewed_while_its_attempt_runs_and_not_after(tmp_path: Path) -> None:
    # Given two claims with a short lease, each kept by a LeaseKeeper, while their attempt threads
    # do nothing (as when reporting blocks on a Redis outage)
    store = CardStore(f"sqlite:///{tmp_path / 'squad.db'}")
    lease_s = 0.6
    claims = [_claimed(store, card_id, lease_s=lease_s) for card_id in ("R1", "R2")]

    def expiry(card_id: str) -> float:
        return float(store.execution_state(card_id)["lease_expires_at"])

    first = {c.card.card_id: expiry(c.card.card_id) for c in claims}
    with LeaseKeeper(store, "R1", claims[0].token, lease_s) as one, \
            LeaseKeeper(store, "R2", claims[1].token, lease_s) as two:
        # Expect both leases renewed several times, past what the claim alone gave them
        wait_for(lambda: all(expiry(cid) > first[cid] + lease_s for cid in first), 30, message="renewals")
        assert not one.lost.is_set() and not two.lost.is_set()
    # When the attempts end, expect no renewal after that: the leases run out (the sweeper's business)
    ended = {cid: expiry(cid) for cid in first}
    time.sleep(lease_s)
    assert {cid: expiry(cid) for cid in first} == ended
    store.dispose()
