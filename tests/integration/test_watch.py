"""`squad watch`: live progress bars fed by the event stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import run_cli, squad_env


def test_watch_shows_a_running_card_progressing_to_done(redis_url: str, tmp_path: Path) -> None:
    # Given a card, a Redis for events and `squad watch` following the stream
    env = squad_env(SQUAD_REDIS_URL=redis_url, USE_CELERY="false", SQUAD_DEMO_DURATION="2",
                    SQUAD_DATABASE_URL=f"sqlite:///{tmp_path / 'squad.db'}")
    assert run_cli("card", "add", "--id", "W-1", "--title", "watch me", "--agent", "demo", env=env).returncode == 0
    out = tmp_path / "watch.out"
    with out.open("wb") as fh:
        watch = subprocess.Popen([sys.executable, "-m", "squad", "watch", "--interval", "0.2"], env=env,
                                 stdout=fh, stderr=subprocess.STDOUT)
        try:
            time.sleep(1.5)  # let it subscribe before the card starts
            # When the card runs in local mode
            done = run_cli("orchestrate", "--mode", "local", "--once", "--wait", "--interval", "0.2", env=env)
            assert done.returncode == 0, done.stderr
            time.sleep(2)  # the watcher reads the last events within its 0.2 s block
        finally:
            watch.send_signal(signal.SIGINT)
            watch.wait(timeout=15)
    # Expect the final frame to show the card's bar at 100 % and DONE
    text = out.read_text(errors="replace")
    assert "W-1" in text and "100%" in text and "DONE" in text, text
    assert watch.returncode == 0
    assert os.path.exists(tmp_path / "squad.db")
