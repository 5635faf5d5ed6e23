"""Output that cannot hurt (docs/security.md): whatever a card or an agent contains, the terminal
only prints it (control characters escaped, Rich markup never interpreted), parsers never crash an
attempt, and no URL password reaches a screen or a log. Real CLI, agents, worker and Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from squad.core.cards import CardSpec
from squad.core.statuses import Status
from squad.live.events import EventBus, progress_event
from squad.ops.embedded_redis import redis_binary
from squad.store.card_store import CardStore
from support.cli import run_cli, squad_env
from support.fake_agents import sandbox_toml
from support.paths import AGENTS
from support.processes import free_port, wait_for
from support.repos import make_repo

PY = sys.executable
HOSTILE = str(AGENTS / "hostile.py")
TOML = f"""
default_agent = "terminal"
{sandbox_toml()}[agents.terminal]
command = ["{PY}", "{HOSTILE}", "terminal"]
[agents.json]
command = ["{PY}", "{HOSTILE}", "json"]
parser = "claude-stream-json"
resume = ["--resume", "{{session_id}}"]
"""
ORCHESTRATE = ["orchestrate", "--mode", "local", "--once", "--wait", "--interval", "0.2"]
EVIL_TITLE = "\x1b]0;owned\x07 [/] [bold]x :skull: \x9b2J"


def local_env(tmp_path: Path, db_name: str = "squad.db") -> dict[str, str]:
    (tmp_path / "squad.toml").write_text(TOML, encoding="utf-8")
    return squad_env(USE_CELERY="false", SQUAD_REDIS_URL=f"redis://127.0.0.1:{free_port()}",
                     SQUAD_DATABASE_URL=f"sqlite:///{tmp_path / db_name}", SQUAD_MAX_RETRIES="0")


def assert_terminal_safe(text: str) -> None:
    """No C0 control except newline/tab, no DEL, no C1 control."""
    bad = sorted({hex(ord(c)) for c in text if (ord(c) < 0x20 and c not in "\n\t") or 0x7f <= ord(c) <= 0x9f})
    assert not bad, (bad, text)


# ---- item 5: the terminal -----------------------------------------------------------------------
def test_logs_card_list_show_and_status_escape_controls_and_never_interpret_markup(tmp_path: Path) -> None:
    # Given a card with a hostile title whose agent prints escapes and markup (a store path with "[/]" too)
    (tmp_path / "[").mkdir()
    env = local_env(tmp_path, db_name="[/]x.db")
    store = CardStore(env["SQUAD_DATABASE_URL"])
    store.add_cards([CardSpec(card_id="EVIL", title=EVIL_TITLE, description="\x1b[31m", labels=["[/]"])])
    store.dispose()
    assert run_cli(*ORCHESTRATE, env=env).returncode == 0
    # When the operator looks at it
    logs = run_cli("logs", "EVIL", env=env)
    listing = run_cli("card", "list", env=env)
    show = run_cli("card", "show", "EVIL", env=env)
    status = run_cli("status", env=env)
    # Expect every command to succeed, print the text escaped and the markup as written
    for proc in (logs, listing, show, status):
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr and "MarkupError" not in proc.stderr
        assert_terminal_safe(proc.stdout)
    assert "\\x1b]0;pwned-title\\x07" in logs.stdout and "\\x9b31m" in logs.stdout
    assert "::progress 50 [/]" in logs.stdout and "[link=http://evil]click[/link] :skull:" in logs.stdout
    assert "\\x1b]0;owned\\x07 [/] [bold]x :skull:" in show.stdout
    assert "[/]" in listing.stdout and "\\x1b]0;owned" in listing.stdout
    assert "[/]x.db" in status.stdout
    # And the step the marker set is stored as the agent wrote it
    # And `--raw` gives the bytes back for those who ask
    raw = run_cli("logs", "EVIL", "--raw", env=env)
    assert raw.returncode == 0 and "\x1b]0;pwned-title\x07" in raw.stdout


def test_review_list_agents_check_and_every_table_escape_controls_and_bidi_overrides(tmp_path: Path) -> None:
    # Given a card in REVIEW whose title retitles the terminal and reverses the line (U+202E), and an
    # agent whose `--version` and command do the same
    repo = tmp_path / "repo"
    make_repo(repo)
    (tmp_path / "marks").mkdir()
    version = tmp_path / "evil-agent"
    version.write_text("#!/bin/sh\nprintf 'v1 \\033]0;ver-owned\\007 \\342\\200\\256txt.exe\\n'\n", encoding="utf-8")
    version.chmod(0o755)
    git_agent = [PY, str(AGENTS / "git_worker.py"), str(tmp_path / "marks")]
    evil_agent = [str(version), "\x1b]0;arg-owned\x07", "\u202e"]
    (tmp_path / "squad.toml").write_text(
        f'default_agent = "git"\n{sandbox_toml(tmp_path / "marks", ro_paths=(version,))}'
        f'[agents.git]\ncommand = {json.dumps(git_agent)}\n'
        f'[agents.evil]\ncommand = {json.dumps(evil_agent)}\n'
        f'[workspace]\nrepo = "{repo}"\nreview = true\n', encoding="utf-8")
    env = squad_env(USE_CELERY="false", SQUAD_REDIS_URL=f"redis://127.0.0.1:{free_port()}",
                    SQUAD_DATABASE_URL=f"sqlite:///{tmp_path / 'squad.db'}", SQUAD_ALLOWED_ROOTS=str(tmp_path),
                    COLUMNS="400")  # wide enough that no cell is cut
    store = CardStore(env["SQUAD_DATABASE_URL"])
    store.add_cards([CardSpec(card_id="BIDI", title="\x1b]0;title-owned\x07 review \u202eexe.txt")])
    store.dispose()
    assert run_cli(*ORCHESTRATE, env=env).returncode == 0
    # When the operator lists what waits for review, the agents, the card and the worktrees
    procs = [run_cli(*args, env=env) for args in (("review", "list"), ("agents", "check"), ("card", "show", "BIDI"),
                                                  ("workspace", "list"))]
    # Expect every table to show the text escaped: no control character, no bidirectional override
    for proc in procs:
        assert proc.returncode == 0, proc.stderr
        assert_terminal_safe(proc.stdout)
        assert "\u202e" not in proc.stdout
    review, agents, show, _workspaces = (p.stdout for p in procs)
    assert "\\x1b]0;title-owned\\x07" in review and "\\u202e" in review
    assert "\\x1b]0;ver-owned\\x07" in agents and "\\x1b]0;arg-owned\\x07" in agents and "\\u202e" in agents
    assert "\\u202e" in show


def test_an_error_quoting_hostile_input_is_one_escaped_line(tmp_path: Path) -> None:
    env = local_env(tmp_path)
    backlog = tmp_path / "b.json"
    backlog.write_text(json.dumps({"cards": [{"card_id": "\x1b]0;x\x07", "title": "t"}]}), encoding="utf-8")
    proc = run_cli("backlog", "import", str(backlog), env=env)
    assert proc.returncode == 2
    assert_terminal_safe(proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1


def test_watch_shows_hostile_steps_escaped(redis_url: str, tmp_path: Path) -> None:
    env = squad_env(SQUAD_REDIS_URL=redis_url, USE_CELERY="false",
                    SQUAD_DATABASE_URL=f"sqlite:///{tmp_path / 'squad.db'}")
    out = tmp_path / "watch.out"
    with out.open("wb") as fh:
        watch = subprocess.Popen([sys.executable, "-m", "squad", "watch", "--interval", "0.2"], env=env,
                                 stdout=fh, stderr=subprocess.STDOUT)
        try:
            port = int(redis_url.rsplit(":", 1)[1])
            wait_for(lambda: any(c.raddr and c.raddr[1] == port for c in psutil.Process(watch.pid).net_connections()),
                     60, message="watch subscribed")
            time.sleep(0.5)
            store = CardStore(env["SQUAD_DATABASE_URL"])  # the watcher's store: its Redis namespace
            bus = EventBus(env["SQUAD_REDIS_URL"].rstrip("/") + "/2", store.redis_keys)
            store.dispose()
            bus.publish(progress_event("W-EVIL", "t1", progress=40, current_step="[/] \x1b]0;evil\x07 [bold]b",
                                       elapsed=1.0, worker="w@test"))
            bus.close()
            time.sleep(2)
        finally:
            watch.send_signal(signal.SIGINT)
            watch.wait(timeout=15)
    text = out.read_text(errors="replace")
    assert watch.returncode == 0, text
    assert "MarkupError" not in text and "Traceback" not in text
    assert "\x07" not in text and "]0;evil" not in text.replace("\\x1b]0;evil", "")
    assert "[/] \\x1b]0;evil\\x07 [bold]b" in text, text


# ---- item 6: agent output that parsers cannot hold ----------------------------------------------
def test_hostile_stream_json_becomes_an_outcome_with_clamped_fields_and_warnings(tmp_path: Path) -> None:
    # Given an agent printing deep JSON, a 10 KB session id, Infinity/NaN/1e400/negative numbers
    env = local_env(tmp_path)
    store = CardStore(env["SQUAD_DATABASE_URL"])
    store.add_cards([CardSpec(card_id="J", title="t", agent="json")])
    # When it runs
    proc = run_cli(*ORCHESTRATE, env=env)
    # Expect the run to be recorded (DONE: the result event said success) with sane numbers
    assert proc.returncode == 0, proc.stderr
    assert store.get_card("J").status == Status.DONE
    run = store.list_runs("J")[0]
    assert run.session_id is None  # every session id it printed was unsafe
    assert run.cost_usd == 0.0 and run.num_turns == 2**31 - 1 and run.input_tokens == 2**31 - 1
    assert run.output_tokens is None
    _run, log = store.last_run_log("J") or (None, "")
    for field in ("session_id", "total_cost_usd", "num_turns", "input_tokens", "output_tokens"):
        assert "WARNING warning: " in log and field in log, (field, log)
    assert "result: success" in log
    store.dispose()


# ---- item 8: passwords --------------------------------------------------------------------------
def test_worker_banner_and_logs_never_show_the_redis_password(tmp_path: Path) -> None:
    # Given a Redis that requires a password
    port, password = free_port(), "pw-Sup3r-secret"
    redis_proc = subprocess.Popen([redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--requirepass", password, "--dir", str(tmp_path)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://:{password}@127.0.0.1:{port}"
    env = squad_env(SQUAD_REDIS_URL=url, SQUAD_DATABASE_URL=f"sqlite:///{tmp_path / 'squad.db'}")
    log_path = tmp_path / "worker.log"
    try:
        with log_path.open("wb") as fh:
            worker = subprocess.Popen([PY, "-m", "squad", "worker", "--concurrency", "1", "--loglevel", "INFO"],
                                      env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                # When the worker starts (banner, connection) and the CLI reports on the same Redis
                wait_for(lambda: "ready." in log_path.read_text(errors="replace") or worker.poll() is not None,
                         90, message="worker ready")
                status = run_cli("status", env=env)
                orch = run_cli("orchestrate", "--mode", "celery", "--once", env={
                    **env, "SQUAD_REDIS_URL": f"redis://:{password}@127.0.0.1:{free_port()}"})
            finally:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(timeout=30)
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
    text = log_path.read_text(errors="replace")
    # Expect the URL shown with its password masked, everywhere
    assert "ready." in text, text
    assert password not in text, text
    assert f":***@127.0.0.1:{port}" in text
    assert status.returncode == 0 and password not in status.stdout + status.stderr
    assert orch.returncode == 2 and password not in orch.stderr and ":***@" in orch.stderr, orch.stderr
