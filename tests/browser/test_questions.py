"""The dashboard and the agents' channel back (docs/agents.md), in a real browser: a card whose agent
asks a person stands out with its question and is answered from the board; a WAITING parent shows
its sub-cards. Real orchestrator (local mode), real MCP agent (tests/agents/mcp_agent.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from squad.core.settings import Settings
from squad.core.statuses import Status
from squad.store.card_store import open_store
from support.browser import open_page
from support.cli import run_cli, squad_env
from support.fake_agents import sandbox_toml
from support.paths import AGENTS
from support.processes import kill_tree, wait_for

PY = sys.executable


def _in_lane(page: Any, card_id: str, lane: str, timeout_s: float = 120) -> None:
    page.wait_for_selector(f'.lane[data-lane="{lane}"] [data-card-id="{card_id}"][data-status="{lane}"]',
                           timeout=timeout_s * 1000, state="attached")


def test_a_question_is_answered_from_the_board_and_a_waiting_parent_shows_its_sub_cards(
        browser: Any, serve_factory: Any, settings: Settings, tmp_path: Path) -> None:
    # Given an agent that asks a person with choices, and a parent whose sub-card waits on a gate
    out, gate = tmp_path / "out", tmp_path / "gate"
    out.mkdir()
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"ASK": {"ask": ["Ship <b>it</b>?", ["yes", "no"]]},
                                "PAR": {"create": [{"title": "child"}]}, "PAR.1": {"gate": str(gate)}}))
    argv = json.dumps([PY, str(AGENTS / "mcp_agent.py"), str(plan), str(out)])
    (tmp_path / "squad.toml").write_text(
        f'default_agent = "talker"\n{sandbox_toml(tmp_path)}[agents.talker]\ncommand = {argv}\n', encoding="utf-8")
    env = squad_env(SQUAD_REDIS_URL=settings.redis_url, SQUAD_DATABASE_URL=settings.database_url, USE_CELERY="false")
    backlog = tmp_path / "backlog.json"
    backlog.write_text(json.dumps({"cards": [{"card_id": "ASK", "title": "asks"},
                                             {"card_id": "PAR", "title": "splits"}]}))
    assert run_cli("backlog", "import", str(backlog), env=env).returncode == 0
    orch = subprocess.Popen([PY, "-m", "squad", "orchestrate", "--mode", "local", "--once", "--wait",
                             "--interval", "0.2"], env=env, cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        server = serve_factory(env)
        page, errors = open_page(browser, server.url)
        # Expect the question in the NEEDS_INPUT lane, as text, with its choices
        _in_lane(page, "ASK", "NEEDS_INPUT")
        page.wait_for_selector('[data-card-id="ASK"] .c-ask .c-q')
        assert page.text_content('[data-card-id="ASK"] .c-q') == "Ship <b>it</b>?"
        # ... and the parent WAITING with its sub-card named
        _in_lane(page, "PAR", "WAITING")
        page.wait_for_selector('[data-card-id="PAR"] .c-family .c-kid')
        assert "PAR.1" in (page.text_content('[data-card-id="PAR"] .c-family') or "")
        # When a person clicks the choice "yes"
        page.click('[data-card-id="ASK"] [data-action="answer"][data-answer="yes"]')
        # Expect the agent to get it and the card to end DONE, without a reload
        _in_lane(page, "ASK", "DONE")
        assert json.loads((out / "ASK.1.json").read_text())["ask"]["text"] == "yes"
        # When the sub-card ends, the parent is DONE too
        gate.touch()
        _in_lane(page, "PAR", "DONE")
        assert errors.items == []
    finally:
        gate.touch()
        wait_for(lambda: orch.poll() is not None, 120, message="orchestrator done")
        kill_tree(orch)
    store = open_store(settings.database_url)
    assert {c.card_id: c.status for c in store.list_cards()} == {
        "ASK": Status.DONE, "PAR": Status.DONE, "PAR.1": Status.DONE}
    store.dispose()
