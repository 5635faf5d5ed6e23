"""`squad watch`: live progress bars fed by the event stream."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from conftest import run_cli, squad_env, wait_for


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
