"""Small things a newcomer meets in the first hour, each checked through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from support.cli import run_cli, squad_env


def test_version_flag() -> None:
    res = run_cli("--version")
    assert (res.returncode, res.stdout.strip()) == (0, "squad 0.1.0"), res.stderr


def test_yaml_and_json_errors_carry_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("cards:\n  - card_id: A\n   title: [unclosed\n")
    (tmp_path / "bad.json").write_text('{"cards": [\n  {"card_id": "A",, "title": "t"}\n]}\n')
    yaml_res = run_cli("backlog", "validate", str(tmp_path / "bad.yaml"))
    json_res = run_cli("backlog", "validate", str(tmp_path / "bad.json"))
    assert yaml_res.returncode == 2 and f"{tmp_path / 'bad.yaml'}:3:" in yaml_res.stderr, yaml_res.stderr
    assert json_res.returncode == 2 and f"{tmp_path / 'bad.json'}:2:19: not valid JSON" in json_res.stderr, \
        json_res.stderr
    assert len(yaml_res.stderr.strip().splitlines()) == 1 and "Traceback" not in yaml_res.stderr


def test_a_duplicate_card_id_still_has_its_depends_on_checked(tmp_path: Path) -> None:
    (tmp_path / "dup.json").write_text(json.dumps({"cards": [
        {"card_id": "X-1", "title": "a"}, {"card_id": "X-1", "title": "b", "depends_on": ["NOPE"]}]}))
    res = run_cli("backlog", "validate", str(tmp_path / "dup.json"))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ["squad: error: card X-1: duplicate card_id (also cards[0])",
                                               "squad: error: card X-1: depends_on unknown card 'NOPE'"]


def test_postgres_urls_are_accepted(pg_url: str) -> None:
    plain = "postgres://" + pg_url.split("://", 1)[1]
    env = squad_env(SQUAD_DATABASE_URL=plain, USE_CELERY="false")
    res = run_cli("card", "add", "--id", "PG-1", "--title", "t", env=env)
    assert res.returncode == 0, res.stderr
    assert json.loads(run_cli("card", "list", "--json", env=env).stdout)[0]["card_id"] == "PG-1"


def test_live_and_archived_log_lines_read_the_same_and_stderr_is_not_an_error(
        redis_url: str, tmp_path: Path) -> None:
    # Given a card run in local mode whose agent prints warnings on stderr and succeeds
    env = squad_env(SQUAD_REDIS_URL=redis_url, USE_CELERY="false", SQUAD_DEMO_DURATION="0.5",
                    SQUAD_DATABASE_URL=f"sqlite:///{tmp_path / 'squad.db'}")
    assert run_cli("card", "add", "--id", "LOG-1", "--title", "t", "--agent", "demo", env=env).returncode == 0
    ran = run_cli("orchestrate", "--mode", "local", "--once", "--wait", "--interval", "0.2", env=env)
    assert ran.returncode == 0, ran.stderr
    # When reading its live log (Redis) and its archived log (store)
    live = run_cli("logs", "LOG-1", "--limit", "1000", env=env).stdout.splitlines()
    archived = run_cli("logs", "LOG-1", "--run", "1", "--limit", "1000", env=env).stdout.splitlines()
    # Expect the same lines, and the agent's stderr labelled STDERR, not ERROR
    assert archived[0].startswith("# attempt 1 (succeeded)")
    assert live == archived[1:], (live, archived)
    assert any(" STDERR warning: src/app.py has no type hints" in line for line in live), live
    assert not any(" ERROR " in line for line in live), live
