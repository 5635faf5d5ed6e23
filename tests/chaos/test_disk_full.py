"""Disk full under the store (SQLite on a small tmpfs the test mounts): the attempt whose outcome
and archive no longer fit is failed with a clear error, the card is retried once there is room,
and the database is not corrupted."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from squad.core.statuses import Status
from support.cli import orchestrator, squad_env
from support.fake_agents import write_agents
from support.paths import AGENTS
from support.processes import wait_for
from support.reliability import record
from support.store import add_cards, open_store, status_of
from support.workers import StartWorker

pytestmark = pytest.mark.slow
PY = sys.executable
ROOM_LEFT_BYTES = 256 * 1024  # enough for small writes (leases, a short outcome), not for a 3 MB archive


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs mounted for this test (the suite runs as root), unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)], check=True, timeout=30)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, timeout=30)


def fill(fs: Path, leave_bytes: int) -> Path:
    """Take all the room of `fs` but `leave_bytes`."""
    stat = os.statvfs(fs)
    free = stat.f_bavail * stat.f_frsize
    filler = fs / "filler"
    with filler.open("wb") as out:
        remaining = max(0, free - leave_bytes)
        block = b"\0" * (1024 * 1024)
        while remaining > 0:
            out.write(block[:remaining])
            remaining -= min(len(block), remaining)
    return filler


@pytest.mark.timeout(240)
def test_store_disk_full_fails_the_attempt_clearly_and_retries_the_card(
        small_fs: Path, tmp_path: Path, redis_url: str, start_worker: StartWorker) -> None:
    # Given the store on a small filesystem and an agent that works 4 s, then prints ~3 MB and succeeds
    db = small_fs / "squad.db"
    url = f"sqlite:///{db}"
    write_agents(tmp_path, flood=["/bin/sh", "-c", f"sleep 4; exec {PY} {AGENTS / 'flood.py'} 3 0"])
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=url, SQUAD_LEASE_S="10",
                    SQUAD_RETRY_BACKOFF="0.5", SQUAD_REQUEUE_AFTER="3")
    start_worker(env, concurrency=1, name="diskfull@test")
    with open_store(url) as store, orchestrator(env, tmp_path / "orch.log"):
        add_cards(store, {"card_id": "FULL"})
        wait_for(lambda: status_of(store, "FULL") == Status.IN_PROGRESS, 60, message="FULL running")

        # When the filesystem fills up while the agent works
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        filler = fill(small_fs, ROOM_LEFT_BYTES)
        full_at = time.monotonic()
        wait_for(lambda: [r.status for r in store.list_runs("FULL")][:1] == ["failed"], 90, interval=0.2,
                 message="the first attempt recorded as failed")
        first = store.list_runs("FULL")[0]
        # and room comes back
        filler.unlink()
        wait_for(lambda: status_of(store, "FULL") == Status.DONE, 120, interval=0.3, message="FULL DONE")
        recovered_s = time.monotonic() - full_at
        runs = store.list_runs("FULL")
        first_log = store.run_log(first.id)

    # Expect attempt 1 failed with a clear error and a short log, the retry DONE, nothing corrupted
    assert first.error is not None and "database disk full" in first.error, first.error
    assert len(first_log.encode()) <= 17 * 1024 and "flood done" in first_log
    assert [(r.attempt, r.status) for r in runs] == [(1, "failed"), (2, "succeeded")]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    record("store disk full (SQLite on a full tmpfs)", in_flight=1, done=1, lost=0, run_twice=0, orphans=0,
           recover_s=recovered_s, note="attempt 1 failed 'database disk full', retried DONE after room came back; "
                                       "integrity_check ok; time = disk full to DONE")
