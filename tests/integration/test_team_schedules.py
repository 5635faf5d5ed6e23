"""Schedules (docs/team.md "Schedules"): one card per tick, exactly once, with several beats; a
missed tick is added once; `squad schedule list` shows the next run."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from squad.core.settings import load_settings
from squad.store.card_store import CardStore
from squad.store.team_store import TeamStore
from squad.team.schedules import latest_tick, run_schedules
from support.cli import run_cli, squad_env
from support.processes import kill_tree, wait_for
from support.workers import StartWorker

NIGHTLY = {"name": "nightly", "cron": "0 3 * * *",
           "card": {"card_id": "NIGHTLY-{date}-{time}", "title": "nightly run of {date}", "labels": ["n-{time}"]}}


def _schedule_rows(store: CardStore, who: str) -> list[dict[str, Any]]:
    rows, _n = TeamStore(store).audit_rows(limit=1000)
    return [r for r in rows if r["who"] == who]


def test_many_passes_at_once_add_one_card_per_tick(sqlite_url: str) -> None:
    """Given a schedule already seen, when eight passes run at the same moment after its tick, one
    adds the tick's card and no other even tries (the audit log has one `add`, no error)."""
    settings = load_settings(database_url=sqlite_url, schedule=[NIGHTLY])
    store = CardStore(sqlite_url)
    try:
        run_schedules(settings, store, None, now=datetime(2026, 12, 6, 12, 0, tzinfo=UTC))  # first sight
        assert store.count_cards() == 0  # last night's tick is not added for a new schedule
        now = datetime(2026, 12, 7, 3, 0, 20, tzinfo=UTC)
        barrier = threading.Barrier(8)
        results: list[Any] = []

        def one() -> None:
            barrier.wait(timeout=60)
            results.extend(run_schedules(settings, CardStore(sqlite_url, migrate=False), None, now=now))

        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert [r.card_id for r in results] == ["NIGHTLY-2026-12-07-0300"]
        card = store.get_card("NIGHTLY-2026-12-07-0300")
        assert (card.title, card.labels) == ("nightly run of 2026-12-07", ["n-0300"])
        rows = _schedule_rows(store, "schedule:nightly")
        assert [(r["action"], r["card_id"], r["result"]) for r in rows] == [("add", "NIGHTLY-2026-12-07-0300", "ok")]
    finally:
        store.dispose()


def test_ticks_missed_while_beat_was_down_are_added_once(sqlite_url: str) -> None:
    settings = load_settings(database_url=sqlite_url, schedule=[{**NIGHTLY, "cron": "0 * * * *"}])
    store = CardStore(sqlite_url)
    try:
        run_schedules(settings, store, None, now=datetime(2026, 12, 7, 9, 30, tzinfo=UTC))
        # beat down from 09:30 to 13:10: the 10:00 … 13:00 ticks were missed; only 13:00 is added, once
        later = datetime(2026, 12, 7, 13, 10, tzinfo=UTC)
        assert [r.card_id for r in run_schedules(settings, store, None, now=later)] == ["NIGHTLY-2026-12-07-1300"]
        assert run_schedules(settings, store, None, now=later + timedelta(minutes=5)) == []
        assert store.count_cards() == 1
    finally:
        store.dispose()


def test_cron_is_utc_with_five_fields() -> None:
    entry = load_settings(schedule=[{**NIGHTLY, "cron": "15 3 * * 1-5"}]).schedule[0]
    assert latest_tick(entry, datetime(2026, 12, 7, 3, 15, 59, tzinfo=UTC)) == datetime(2026, 12, 7, 3, 15, tzinfo=UTC)
    # Saturday and Sunday are skipped: from Monday 03:14 the latest tick is Friday's
    assert latest_tick(entry, datetime(2026, 12, 7, 3, 14, tzinfo=UTC)) == datetime(2026, 12, 4, 3, 15, tzinfo=UTC)


def test_bad_schedules_are_one_line_and_exit_2(tmp_path: Path) -> None:
    for cron in ("0 3 * *", "* * * * * *"):
        (tmp_path / "squad.toml").write_text(f'[[schedule]]\ncron = "{cron}"\ncard = {{card_id = "X", title = "x"}}\n')
        res = run_cli("schedule", "list", env=squad_env(SQUAD_CONFIG=str(tmp_path / "squad.toml")))
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and "5 fields" in res.stderr, res.stderr
    (tmp_path / "squad.toml").write_text('[[schedule]]\ncron = "61 3 * * *"\ncard = {card_id = "X", title = "x"}\n')
    res = run_cli("schedule", "list", env=squad_env(SQUAD_CONFIG=str(tmp_path / "squad.toml"),
                                                   SQUAD_DATABASE_URL=f"sqlite:///{tmp_path}/s.db"))
    assert res.returncode == 2 and "invalid cron" in res.stderr, res.stderr


def test_two_beats_and_one_schedule_give_one_card_per_tick(redis_url: str, sqlite_url: str, tmp_path: Path,
                                                           start_worker: StartWorker) -> None:
    """Given a schedule every minute, one worker and two `squad beat` processes (each sends the team
    pass every 5 s), when two ticks have passed, each tick has one card and the schedule's audit rows
    are one `ok` per card (a second add of a tick would show as an error row)."""
    config = tmp_path / "squad.toml"
    config.write_text('[[schedule]]\nname = "minutely"\ncron = "* * * * *"\n'
                      'card = {card_id = "TICK-{date}-{time}", title = "tick {time}"}\n')
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url, SQUAD_CONFIG=str(config))
    listed = run_cli("schedule", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["name"] == "minutely" and datetime.fromisoformat(row["next_run"]) > datetime.now(tz=UTC)
    start_worker(env, concurrency=2)
    beats = []
    for n in range(2):
        cwd = tmp_path / f"beat{n}"
        cwd.mkdir()
        log = open(tmp_path / f"beat{n}.log", "wb")  # noqa: SIM115 - kept open for the process lifetime
        beats.append(subprocess.Popen([sys.executable, "-m", "squad", "beat"], cwd=cwd, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))
    store = CardStore(sqlite_url)
    try:
        def cards() -> list[str]:
            return sorted(c.card_id for c in store.list_cards())

        wait_for(lambda: len(cards()) >= 2, 200, interval=1, message="two scheduled ticks")
        ticks = TeamStore(store)
        rows = _schedule_rows(store, "schedule:minutely")
        assert all(r["result"] == "ok" for r in rows), rows
        assert sorted(r["card_id"] for r in rows) == cards()
        assert len(set(cards())) == len(cards())
        assert ticks.last_tick("minutely") is not None
        shown = json.loads(run_cli("schedule", "list", "--json", env=env).stdout)
        assert shown[0]["last_tick"] is not None
    finally:
        store.dispose()
        for beat in beats:
            kill_tree(beat)
