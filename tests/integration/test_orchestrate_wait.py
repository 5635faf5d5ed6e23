"""`squad orchestrate --wait` never waits silently or forever (a Redis answering with no worker used to hang it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from support.cli import run_cli, squad_env
from support.fake_agents import sandbox_toml
from support.paths import AGENTS


def _project(tmp_path: Path, redis_url: str, *cards: dict[str, object]) -> dict[str, str]:
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=f"sqlite:///{tmp_path / 'squad.db'}",
                    SQUAD_DEMO_DURATION="0.5")
    if cards:
        (tmp_path / "backlog.json").write_text(json.dumps({"cards": list(cards)}))
        assert run_cli("backlog", "import", "backlog.json", env=env).returncode == 0
    return env


def test_auto_mode_with_redis_but_no_worker_runs_locally_and_says_why(redis_url: str, tmp_path: Path) -> None:
    # Given a Redis that answers, no worker, and two cards (one depending on the other)
    env = _project(tmp_path, redis_url, {"card_id": "A-1", "title": "a", "agent": "demo"},
                   {"card_id": "A-2", "title": "b", "agent": "demo", "depends_on": ["A-1"]})
    # When orchestrating in auto mode until settled
    res = run_cli("orchestrate", "--once", "--wait", "--interval", "0.2", env=env, timeout=150)
    # Expect a warning saying why, the cards run locally, and exit 0
    assert res.returncode == 0, res.stderr
    assert "no worker is consuming `cards`" in res.stderr and "running cards in local mode" in res.stderr, res.stderr
    assert "mode local" in res.stderr
    # ... in its own human lines only: a one-shot run does not also print the service's log records
    assert all(line.startswith(("warning:", "orchestrator:")) for line in res.stderr.splitlines()), res.stderr
    listed = json.loads(run_cli("card", "list", "--json", env=env).stdout)
    assert {c["card_id"]: c["status"] for c in listed} == {"A-1": "DONE", "A-2": "DONE"}


def test_celery_mode_without_worker_says_what_it_waits_for_and_timeout_bounds_it(
        redis_url: str, tmp_path: Path) -> None:
    # Given a card and a Redis with no worker
    env = _project(tmp_path, redis_url, {"card_id": "Q-1", "title": "q", "agent": "demo"})
    # When waiting in celery mode with a 12 s timeout
    res = run_cli("orchestrate", "--mode", "celery", "--once", "--wait", "--timeout", "12", env=env, timeout=120)
    # Expect: what it waits for, said at once and again within 10 s; then exit 124 with a clear message
    assert res.returncode == 124, res.stderr
    waiting = [line for line in res.stderr.splitlines()
               if "waiting for 1 card(s): 1 QUEUED; no worker is consuming `cards`" in line]
    assert len(waiting) >= 2, res.stderr
    assert "squad: error: --timeout 12 s reached, waiting for 1 card(s): 1 QUEUED" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_timeout_without_wait_is_a_usage_error(tmp_path: Path, redis_url: str) -> None:
    env = _project(tmp_path, redis_url)
    res = run_cli("orchestrate", "--once", "--timeout", "5", env=env)
    assert res.returncode == 2 and res.stderr.strip() == "squad: error: --timeout bounds --wait: use both"


def test_nothing_to_do_is_said(tmp_path: Path, redis_url: str) -> None:
    # Given an empty store
    env = _project(tmp_path, redis_url)
    # When orchestrating once
    res = run_cli("orchestrate", "--once", "--wait", env=env)
    # Expect one line saying there is nothing to do, exit 0
    assert res.returncode == 0, res.stderr
    assert "orchestrator: nothing to do: no card is TODO, QUEUED, IN_PROGRESS or RETRYING (the store has no cards)" \
        in res.stderr, res.stderr


def test_a_wait_that_ends_with_failed_cards_names_each_with_its_error_escaped(tmp_path: Path, redis_url: str) -> None:
    # Given a card whose repository is outside the allowed roots: refused at import, with the reason
    from support.repos import make_repo

    make_repo(tmp_path / "outside" / "app")
    env = _project(tmp_path, redis_url)
    (tmp_path / "outside.json").write_text(json.dumps({"cards": [
        {"card_id": "R-0", "title": "in the repo", "agent": "demo", "repo": str(tmp_path / "outside" / "app")}]}))
    refused = run_cli("backlog", "import", "outside.json", env=env)
    assert refused.returncode == 2 and "outside the allowed roots" in refused.stderr, refused.stderr
    # ... and two cards that fail when they run: an agent that is not installed, and one whose agent
    # reports an error full of terminal escapes
    sample = tmp_path / "hostile.jsonl"
    sample.write_text(json.dumps({"type": "result", "subtype": "success", "is_error": True,
                                  "result": "boom \x1b]0;pwned\x07\x1b[31mred\nsecond line"}) + "\n")
    agent = [sys.executable, str(AGENTS / "stream_json.py"), str(sample)]
    (tmp_path / "squad.toml").write_text(
        f'{sandbox_toml(ro_paths=(sample,))}'
        f'[agents.hostile]\ncommand = {json.dumps(agent)}\nparser = "claude-stream-json"\n'
        '[agents.missing]\ncommand = ["/nonexistent/squad-test-agent"]\n')
    env = _project(tmp_path, redis_url, {"card_id": "R-1", "title": "not installed", "agent": "missing",
                                         "max_retries": 0},
                   {"card_id": "H-1", "title": "hostile", "agent": "hostile", "max_retries": 0})
    # When orchestrating until settled
    res = run_cli("orchestrate", "--mode", "local", "--once", "--wait", "--interval", "0.2", env=env, timeout=150)
    # Expect exit 1 and one line per FAILED card with its error, control characters shown escaped
    assert res.returncode == 1, res.stderr
    failed = [line for line in res.stderr.splitlines() if " FAILED: " in line]
    assert len(failed) == 2, res.stderr
    assert any(line.startswith("orchestrator: card R-1 FAILED: ") and "/nonexistent/squad-test-agent" in line
               for line in failed), failed
    assert "orchestrator: card H-1 FAILED: boom \\x1b]0;pwned\\x07\\x1b[31mred\\x0asecond line" in failed, failed
    assert "\x1b" not in res.stderr and "\x07" not in res.stderr
    # ... and the same when there was nothing left to do
    again = run_cli("orchestrate", "--once", "--wait", env=env)
    assert again.returncode == 1 and sum(" FAILED: " in line for line in again.stderr.splitlines()) == 2, again.stderr


def test_sigterm_stops_a_waiting_orchestrator_with_exit_143(redis_url: str, tmp_path: Path) -> None:
    import signal
    import subprocess

    from support.processes import wait_for

    # Given an orchestrator waiting in celery mode for a card no worker takes
    env = _project(tmp_path, redis_url, {"card_id": "T-1", "title": "t", "agent": "demo"})
    log = tmp_path / "orchestrate.err"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "squad", "orchestrate", "--mode", "celery", "--wait"],
                                env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(lambda: "waiting for 1 card(s)" in log.read_text(), 60, message="the orchestrator waiting")
        # When it gets SIGTERM
        proc.send_signal(signal.SIGTERM)
        # Expect a clean stop with 143, as README says of every command
        assert proc.wait(timeout=30) == 143, log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
