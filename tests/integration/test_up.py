"""`squad up` without a terminal: one line per status change, process logs in files, and its settings
shared with the other commands run in its folder through `.squad/up.json`."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from conftest import free_port, run_cli, squad_env, wait_for


def test_up_demo_reports_status_changes_keeps_service_logs_in_files_and_shares_its_settings(
        tmp_path: Path, spawn: Any) -> None:
    # Given no Redis answering (up starts its embedded one) and no terminal
    env = squad_env(SQUAD_REDIS_URL=f"redis://127.0.0.1:{free_port()}")
    out = tmp_path / "up.out"
    state = tmp_path / ".squad" / "up.json"
    with out.open("wb") as fh:
        # When `squad up --demo` runs until the demo is done
        up = spawn("up", "--demo", "--port", str(free_port()), env=env, stdout=fh)
        wait_for(lambda: "done in" in out.read_text() or up.poll() is not None, 240, interval=0.5,
                 message="demo summary")
        text = out.read_text()
        assert up.poll() is None, text

        # Expect another shell's command in this folder (no settings of its own) to see up's store, and say so
        assert state.exists() and oct(state.stat().st_mode & 0o777) == "0o600"
        other = run_cli("card", "list", "--json", env=squad_env())
        assert other.returncode == 0, other.stderr
        assert "squad: using the settings of `squad up`" in other.stderr
        assert {c["card_id"]: c["status"] for c in json.loads(other.stdout)} == {
            f"DEMO-{i}": "DONE" for i in range(1, 7)}

        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=90) == 0
    text = out.read_text()
    # Expect one line per status change, the retry with its delay, the dashboard URL, the summary last
    assert "DEMO-1 QUEUED" in text and "DEMO-1 DONE" in text, text
    assert "DEMO-4 RETRYING (attempt 1 failed: exit code 1; next attempt in" in text, text
    assert "dashboard and API on http://127.0.0.1:" in text and "process logs in .squad/logs/" in text
    assert "6/6 done in" in text
    # ... no Celery banner or warnings on the screen: they are in the service logs
    assert "celery@" not in text and "SecurityWarning" not in text and "-------------- " not in text, text
    assert "ready." in (tmp_path / ".squad" / "logs" / "worker.log").read_text(errors="replace")
    # ... and the state file gone with `squad up`
    assert not state.exists()
