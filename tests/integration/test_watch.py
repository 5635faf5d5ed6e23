"""`squad watch`: live progress bars fed by the event stream."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from squad.live.events import EventBus, progress_event
from squad.store.card_store import CardStore
from support.cli import run_cli, squad_env
from support.processes import wait_for


def test_watch_shows_a_running_card_progressing_to_done(redis_url: str, tmp_path: Path, spawn: Any) -> None:
    # Given a card, a Redis for events and `squad watch` following the stream, started as a background job
    # of a shell without job control (SIGINT ignored)
    env = squad_env(SQUAD_REDIS_URL=redis_url, USE_CELERY="false", SQUAD_DEMO_DURATION="2",
                    SQUAD_DATABASE_URL=f"sqlite:///{tmp_path / 'squad.db'}")
    assert run_cli("card", "add", "--id", "W-1", "--title", "watch me", "--agent", "demo", env=env).returncode == 0
    out = tmp_path / "watch.out"
    with out.open("wb") as fh:
        watch = spawn("watch", "--interval", "0.2", env=env, stdout=fh, sigint_ignored=True)
        time.sleep(1.5)  # let it subscribe before the card starts
        # When the card runs in local mode, then the watcher gets SIGTERM
        done = run_cli("orchestrate", "--mode", "local", "--once", "--wait", "--interval", "0.2", env=env)
        assert done.returncode == 0, done.stderr
        time.sleep(2)  # the watcher reads the last events within its 0.2 s block
        watch.send_signal(signal.SIGTERM)
        watch.wait(timeout=15)
    # Expect it stopped cleanly (as on Ctrl-C, exit 143 for SIGTERM) and its final frame shows the card's bar
    # at 100 % and DONE
    text = out.read_text(errors="replace")
    assert watch.returncode == 143, text
    assert "W-1" in text and "100%" in text and "DONE" in text, text
    assert os.path.exists(tmp_path / "squad.db")


def test_logs_follow_stops_on_sigterm(redis_url: str, tmp_path: Path, spawn: Any) -> None:
    # Given `squad logs --follow` on a card that never runs, SIGINT ignored
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=f"sqlite:///{tmp_path / 'squad.db'}")
    assert run_cli("card", "add", "--id", "L-1", "--title", "t", env=env).returncode == 0
    follow = spawn("logs", "L-1", "--follow", env=env, stdout=subprocess.PIPE, sigint_ignored=True)
    port = int(redis_url.rsplit(":", 1)[1])
    wait_for(lambda: any(c.raddr and c.raddr.port == port for c in psutil.Process(follow.pid).net_connections()),
             90, message="logs --follow connected to Redis")
    # When it gets SIGTERM
    follow.send_signal(signal.SIGTERM)
    # Expect it to stop at once, with the conventional code and no traceback
    assert follow.wait(timeout=15) == 143
    assert follow.stdout is not None and b"Traceback" not in follow.stdout.read()


def test_watch_misses_no_event_published_between_two_of_its_reads(redis_url: str, tmp_path: Path,
                                                                   spawn: Any) -> None:
    # Given `squad watch` following the stream with its shortest block, so it reads again every 0.1 s
    env = squad_env(SQUAD_REDIS_URL=redis_url, USE_CELERY="false",
                    SQUAD_DATABASE_URL=f"sqlite:///{tmp_path / 'squad.db'}")
    out = tmp_path / "watch.out"
    with out.open("wb") as fh:
        watch = spawn("watch", "--interval", "0.1", env=env, stdout=fh)
        port = int(redis_url.rsplit(":", 1)[1])
        wait_for(lambda: any(c.raddr and c.raddr.port == port for c in psutil.Process(watch.pid).net_connections()),
                 90, message="watch connected to Redis")
        # When 60 cards report progress at uneven moments, many of them while it is between two reads
        # (reading "after $" again after an empty read lost those)
        store = CardStore(env["SQUAD_DATABASE_URL"])  # the watcher's store: its Redis namespace
        bus = EventBus(env["SQUAD_REDIS_URL"].rstrip("/") + "/2", store.redis_keys)
        store.dispose()
        for i in range(60):
            bus.publish(progress_event(f"EV-{i:02d}", f"t{i}", progress=50, current_step="half",
                                       elapsed=1.0, worker="w@test"))
            time.sleep(0.023 * (i % 7))
        bus.close()
        time.sleep(1.5)
        watch.send_signal(signal.SIGINT)
        watch.wait(timeout=15)
    # Expect its last frame to hold a bar for every one of them
    text = out.read_text(errors="replace")
    assert watch.returncode == 0, text
    missing = [f"EV-{i:02d}" for i in range(60) if f"EV-{i:02d}" not in text]
    assert missing == [], text
