"""`squad up` without a terminal: one line per status change, process logs in files, and its settings
shared with the other commands run in its folder through `.squad/up.json`; on a terminal: a live Rich view."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import termios
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import psutil
import pytest
import redis

from squad.store.card_store import CardStore
from support.cli import run_cli, squad_env
from support.processes import free_port, wait_for


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
        # ... and up's cards to go through queues of this store's own, which the commands share too
        instance = CardStore(f"sqlite:///{tmp_path / '.squad' / 'demo.db'}")
        queues = f"cards.{instance.instance_id},maintenance.{instance.instance_id}"
        instance.dispose()
        shared = json.loads(state.read_text())["env"]
        assert f"{shared['SQUAD_CARDS_QUEUE']},{shared['SQUAD_MAINTENANCE_QUEUE']}" == queues
        assert f"queues {queues}" in (tmp_path / ".squad" / "logs" / "worker.log").read_text(errors="replace")
        # ... and its embedded Redis to refuse a client without the password, which the 0600 state file holds
        redis_url = urlsplit(shared["SQUAD_REDIS_URL"])
        password = unquote(redis_url.password or "")
        assert len(password) >= 32
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=redis_url.hostname, port=redis_url.port, socket_timeout=5).ping()
        assert redis.Redis.from_url(shared["SQUAD_REDIS_URL"], socket_timeout=5).ping()
        assert not any(password in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"]))

        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=90) == 143  # stopped by SIGTERM, as README says (130 for Ctrl-C)
    text = out.read_text()
    # Expect one line per status change, the retry with its delay, the dashboard URL, the summary last
    assert "DEMO-1 QUEUED" in text and "DEMO-1 DONE" in text, text
    assert "DEMO-4 RETRYING (attempt 1 failed: exit code 1; next attempt in" in text, text
    assert "dashboard and API on http://127.0.0.1:" in text and "process logs in .squad/logs/" in text
    assert "6/6 done in" in text
    # ... no Celery banner or warnings on the screen: they are in the service logs
    assert "celery@" not in text and "SecurityWarning" not in text and "-------------- " not in text, text
    assert "ready." in (tmp_path / ".squad" / "logs" / "worker.log").read_text(errors="replace")
    # ... and the state file gone with `squad up`, the password on no screen and in no log
    assert not state.exists()
    assert password not in text
    assert not any(password in f.read_text(errors="replace") for f in (tmp_path / ".squad" / "logs").glob("*.log"))


# CSI (colours, cursor moves, line clears), OSC (titles, links), and the other two-byte escapes Rich uses.
ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
SCREEN_COLUMNS, SCREEN_ROWS = 120, 40


class PtyScreen:
    """The master side of a pseudo-terminal, drained by a thread (so the child never blocks on a full
    terminal buffer) into everything it ever wrote."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", SCREEN_ROWS, SCREEN_COLUMNS, 0, 0))
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="pty-reader", daemon=True)

    def start(self) -> None:
        os.close(self.slave)  # the child holds its own copies: EOF/EIO once every writer is gone
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: no process holds the terminal any more
                return
            if not data:
                return
            with self._lock:
                self._chunks.append(data)

    def text(self) -> str:
        """Everything shown so far, escape sequences removed."""
        with self._lock:
            raw = b"".join(self._chunks)
        return ANSI_RE.sub("", raw.decode("utf-8", errors="replace")).replace("\r", "")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.master)


@pytest.mark.timeout(300)  # its own bounded waits (180 + 60 + 30 s) fail first, with the screen's text
def test_up_demo_on_a_terminal_shows_a_live_view_and_sigterm_stops_every_process(
        tmp_path: Path, spawn: Any) -> None:
    # Given no Redis answering (up starts its embedded one) and a real terminal of a fixed size
    port = free_port()
    env = squad_env(SQUAD_REDIS_URL=f"redis://127.0.0.1:{free_port()}", TERM="xterm-256color")
    for key in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(key, None)
    state = tmp_path / ".squad" / "up.json"
    screen = PtyScreen()
    try:
        # When `squad up --demo` runs on it until the demo is done
        started = time.monotonic()
        up = spawn("up", "--demo", "--port", str(port), env=env,
                   stdin=screen.slave, stdout=screen.slave, stderr=screen.slave)
        screen.start()
        wait_for(lambda: "6/6 done" in screen.text() or up.poll() is not None, 180, interval=0.5,
                 message="demo summary on the terminal")
        demo_s = time.monotonic() - started
        text = screen.text()
        assert up.poll() is None, text
        assert state.exists()
        tree = psutil.Process(up.pid).children(recursive=True)
        assert tree, "squad up runs its services as child processes"

        # Expect the live view: the dashboard URL, process logs' folder, each demo card with its status
        assert f"http://127.0.0.1:{port}" in text, text
        assert ".squad/logs" in text, text
        rows = re.findall(r"(DEMO-[1-6])\s+(TODO|BLOCKED|QUEUED|IN_PROGRESS|RETRYING|DONE|FAILED)\b", text)
        assert dict(rows) == {f"DEMO-{i}": "DONE" for i in range(1, 7)}, text  # each card's last row
        assert "IN_PROGRESS" in {status for _card, status in rows}, text
        # ... drawn as the live table (header, progress bars, workers), not as plain lines
        assert re.search(r"card\s+status\s+progress\s+step", text), text
        assert re.search(r"DEMO-6\s+DONE\s+\S+\s+100%", text), text
        assert "workers: squad-up@" in text, text
        # ... the flaky card's retry shown while it waited, and the summary at the end
        assert "next attempt in" in text or re.search(r"DEMO-4\s+RETRYING", text), text
        summary = re.search(r"6/6 done in (\d+) s", text)
        assert summary is not None, text
        print(f"\ndemo: '6/6 done in {summary.group(1)} s' shown {demo_s:.0f} s after start")
        # ... and not the services' own output (it is in the log files)
        assert "celery@" not in text and "SecurityWarning" not in text, text

        # When it gets SIGTERM
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 143, screen.text()
        # Expect every process it started gone, and its state file removed
        _, alive = psutil.wait_procs(tree, timeout=30)
        assert not alive, [p.pid for p in alive]
        assert not state.exists()
    finally:
        screen.close()
