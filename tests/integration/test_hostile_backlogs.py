"""Hostile backlogs (issue 21, item 15; docs/security.md "Second round"): nested 100k deep, a million
cards, YAML aliases that expand — each a clear one-line refusal with exit 2 (a 4xx from the API),
nothing stored, memory bounded. Real CLI subprocesses and a real API server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from squad.actions.backlog import MAX_BACKLOG_CARDS
from squad.store.card_store import CardStore
from support.cli import run_cli, squad_env

DEEP = 100_000
LAUGHS = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] +
                   [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
                    f"*a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)] +
                   ["cards:", "  - card_id: L-1", "    title: laughs", "    labels: *a8"]) + "\n"


@pytest.mark.parametrize(("name", "text", "says"), [
    ("deep.json", '{"cards": ' + "[" * DEEP + "]" * DEEP + "}", "nested deeper than"),
    ("deep-card.json", '{"cards": [{"card_id": "D-1", "title": ' + "[" * 900 + "]" * 900 + "}]}", "nested deeper than"),
    ("deep.yaml", "cards: " + "[" * DEEP + "]" * DEEP + "\n", "nested deeper than"),
    ("laughs.yaml", LAUGHS, "YAML aliases"),
    ("many.json", json.dumps({"cards": [{"card_id": f"M-{i}", "title": "t"} for i in range(MAX_BACKLOG_CARDS + 1)]}),
     "split it into several files"),
    ("million.json", json.dumps({"cards": [{"card_id": f"c{i:07d}", "title": "t"} for i in range(1_000_000)]}),
     "larger than 16 MiB"),
], ids=["deep-json", "deep-card", "deep-yaml", "yaml-aliases", "100k-plus-1", "million"])  # short: ids go into env
def test_a_hostile_backlog_is_one_clear_line_and_exit_2_with_nothing_stored(tmp_path: Path, name: str, text: str,
                                                                          says: str) -> None:
    # Given a hostile backlog file
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'squad.db'}"
    env = squad_env(SQUAD_DATABASE_URL=db, USE_CELERY="false")
    # When it is validated and imported
    for command in ("validate", "import"):
        proc = run_cli("backlog", command, str(path), env=env, timeout=300)
        # Expect exit 2 and one line saying why, never a traceback or an internal error
        assert proc.returncode == 2, (command, proc.stderr[-2000:])
        assert len(proc.stderr.strip().splitlines()) == 1 and says in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    store = CardStore(db)
    assert store.list_cards() == []
    store.dispose()


def test_the_api_refuses_a_body_nested_100k_deep_with_a_4xx(api: Any) -> None:
    # Given the API; When a card body nests 100k deep (200 KB: under the body limit)
    body = '{"card_id": "N-1", "title": ' + "[" * DEEP + "]" * DEEP + "}"
    with api.client() as http:
        res = http.post("/api/cards", content=body, headers={"Content-Type": "application/json"})
        bare = http.post("/api/cards", content="[" * DEEP + "]" * DEEP, headers={"Content-Type": "application/json"})
    # Expect a 4xx with a reason, and nothing stored
    for answer in (res, bare):
        assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])
        assert answer.json()["detail"]
    assert api.state.store.list_cards() == []
