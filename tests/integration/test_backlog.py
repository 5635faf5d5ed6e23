"""Backlog files: import (all-or-nothing, every problem at once), export round-trip, validate; in-process
against both databases and end to end through the `squad` CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from squad.actions.backlog import export_backlog, import_file, parse_backlog, validate_file
from squad.core.errors import BacklogError, ConflictError, DuplicateCardError
from squad.core.settings import Settings
from squad.core.statuses import Status
from squad.live.events import EventBus
from squad.store.card_store import CardStore
from squad.store.tables import cards as cards_t
from squad.submit import submit_group
from support.api import ApiServer
from support.cli import run_cli, squad_env

FULL_CARD = {
    "card_id": "API-1", "title": "Add a health endpoint", "description": "GET /health returns 200",
    "acceptance_criteria": ["returns 200", "has a version"], "squad": "backend", "agent": "demo", "priority": 9,
    "depends_on": [], "labels": ["api", "ops"], "workdir": "api-1", "time_limit": 600.0,
    "soft_time_limit": 500.0, "max_retries": 1,
}
BACKLOG = {"cards": [
    FULL_CARD,
    {"card_id": "API-2", "title": "Document it", "depends_on": ["API-1"], "priority": 2},
    {"card_id": "WEB-1", "title": "Show it", "depends_on": ["API-1", "API-2"], "labels": ["web"]},
]}
#: One broken file holding every kind of problem; each expected line names its card.
BROKEN = {"cards": [
    {"card_id": "A", "title": "a"},
    {"card_id": "A", "title": "duplicate"},
    {"card_id": "-bad", "title": "bad id"},
    {"card_id": "B", "title": "b", "depends_on": ["GHOST"]},
    {"card_id": "C", "title": "c", "priority": 10},
    {"card_id": "D", "title": "d", "colour": "red"},
    {"card_id": "E", "title": "e", "labels": "not-a-list"},
    {"card_id": "F", "title": "f", "depends_on": ["G"]},
    {"card_id": "G", "title": "g", "depends_on": ["F"]},
]}
BROKEN_EXPECT = [
    ("card A:", "duplicate"), ("card -bad:", "card_id"), ("card B:", "GHOST"), ("card C:", "priority"),
    ("card D:", "colour: unknown field"), ("card E:", "labels"), ("card F:", "cycle"),
]


def write(path: Path, data: Any) -> Path:
    if path.suffix in (".yaml", ".yml"):
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
    else:
        path.write_text(json.dumps(data), encoding="utf-8")
    return path


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def cli_cards(env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    proc = run_cli("card", "list", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout))


# ---- in-process, on SQLite and PostgreSQL -------------------------------------------------------
@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_json_and_yaml_backlogs_import_every_field(store: CardStore, tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path / f"backlog{suffix}", BACKLOG)
    assert import_file(store, path) == (3, 0)
    card = store.get_card("API-1")
    assert card.model_dump(include=set(FULL_CARD)) == FULL_CARD
    assert store.get_card("WEB-1").depends_on == ["API-1", "API-2"]
    assert all(c.status == Status.TODO for c in store.list_cards())


def test_a_broken_file_reports_every_problem_and_writes_nothing(store: CardStore, tmp_path: Path) -> None:
    with pytest.raises(BacklogError) as info:
        import_file(store, write(tmp_path / "broken.json", BROKEN))
    problems = info.value.problems
    for prefix, word in BROKEN_EXPECT:
        assert any(p.startswith(prefix) and word in p for p in problems), (prefix, word, problems)
    assert len(problems) == len(BROKEN_EXPECT)
    assert store.list_cards() == []


def test_import_may_depend_on_cards_already_in_the_store(store: CardStore, tmp_path: Path) -> None:
    import_file(store, write(tmp_path / "first.json", {"cards": [{"card_id": "BASE", "title": "b"}]}))
    assert import_file(store, write(tmp_path / "second.json",
                                    {"cards": [{"card_id": "NEXT", "title": "n", "depends_on": ["BASE"]}]})) == (1, 0)


def test_importing_an_id_already_stored_without_update_is_rejected_whole(store: CardStore, tmp_path: Path) -> None:
    import_file(store, write(tmp_path / "b.json", BACKLOG))
    again = {"cards": [{"card_id": "NEW", "title": "n"}, {"card_id": "API-2", "title": "changed"}]}
    with pytest.raises(ConflictError, match="API-2"):
        import_file(store, write(tmp_path / "again.json", again))
    assert "NEW" not in {card.card_id for card in store.list_cards()}
    assert store.get_card("API-2").title == "Document it"


def test_update_rewrites_todo_cards_only(store: CardStore, tmp_path: Path) -> None:
    # Given the backlog imported and API-1 already QUEUED
    import_file(store, write(tmp_path / "b.json", BACKLOG))
    assert store.enqueue("API-1", "t1", expected=[Status.TODO])
    # When re-importing with --update a file that changes API-2 only
    changed = {"cards": [{"card_id": "API-2", "title": "Document it well", "priority": 7, "depends_on": ["API-1"]}]}
    assert import_file(store, write(tmp_path / "c.json", changed), update=True) == (0, 1)
    # Expect API-2 rewritten
    assert (store.get_card("API-2").title, store.get_card("API-2").priority) == ("Document it well", 7)
    # And a file touching the QUEUED API-1 is refused whole
    touching = {"cards": [{"card_id": "API-1", "title": "x"}, {"card_id": "API-2", "title": "y"}]}
    with pytest.raises(BacklogError, match="API-1: is QUEUED"):
        import_file(store, write(tmp_path / "d.json", touching), update=True)
    assert store.get_card("API-2").title == "Document it well"


def test_problems_of_the_file_and_of_the_store_are_reported_together(store: CardStore, tmp_path: Path) -> None:
    # Given a stored card, then a file with a field error, that id again, and a cycle through the store
    import_file(store, write(tmp_path / "b.json", {"cards": [{"card_id": "OLD", "title": "o"}]}))
    mixed = {"cards": [{"card_id": "BAD", "title": "b", "priority": 12},
                       {"card_id": "OLD", "title": "again"},
                       {"card_id": "N1", "title": "n", "depends_on": ["N2", "GONE"]},
                       {"card_id": "N2", "title": "n", "depends_on": ["N1"]}]}
    # When
    with pytest.raises(BacklogError) as info:
        import_file(store, write(tmp_path / "m.json", mixed))
    # Expect every problem in one error (the file's, then the store's), and nothing written
    problems = info.value.problems
    assert [p.split(":")[0] for p in problems] == ["card BAD", "card OLD", "card N1", "card N1"], problems
    assert "already exists" in problems[1] and "GONE" in problems[2] and "cycle" in problems[3]
    assert [c.card_id for c in store.list_cards()] == ["OLD"]


def test_the_cycle_check_reads_only_the_cards_the_new_ones_reach(store: CardStore, tmp_path: Path) -> None:
    # Given stored cards X and Y made (behind the store's back) to depend on each other, and a card R
    import_file(store, write(tmp_path / "b.json", {"cards": [{"card_id": "X", "title": "x"},
                                                             {"card_id": "Y", "title": "y"},
                                                             {"card_id": "R", "title": "r"}]}))
    with store.tx() as conn:
        conn.execute(cards_t.update().where(cards_t.c.card_id == "X").values(depends_on=["Y"]))
        conn.execute(cards_t.update().where(cards_t.c.card_id == "Y").values(depends_on=["X"]))
    # When adding a card that reaches only R, and one that reaches X
    assert import_file(store, write(tmp_path / "r.json", {"cards": [{"card_id": "NEW", "title": "n",
                                                                     "depends_on": ["R"]}]})) == (1, 0)
    with pytest.raises(BacklogError, match=r"cycle (X -> Y -> X|Y -> X -> Y)"):
        import_file(store, write(tmp_path / "x.json", {"cards": [{"card_id": "ON-X", "title": "n",
                                                                  "depends_on": ["X"]}]}))
    # Expect the first added (the cycle it does not reach was never read), the second refused
    assert {c.card_id for c in store.list_cards()} == {"X", "Y", "R", "NEW"}


def test_export_then_import_into_a_fresh_store_round_trips(store: CardStore, tmp_path: Path) -> None:
    import_file(store, write(tmp_path / "b.json", BACKLOG))
    exported = export_backlog(store)
    fresh = CardStore(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        import_file(fresh, write(tmp_path / "exported.yaml", exported))
        assert export_backlog(fresh) == exported
        assert {c["card_id"] for c in exported["cards"]} == {"API-1", "API-2", "WEB-1"}
        assert next(c for c in exported["cards"] if c["card_id"] == "API-1") == FULL_CARD
    finally:
        fresh.dispose()


# ---- parsing rules (no store) -------------------------------------------------------------------
@pytest.mark.parametrize("data", [{"tasks": []}, {"cards": "A"}, "cards", 42, None])
def test_a_file_without_a_cards_list_is_one_clear_problem(data: Any) -> None:
    with pytest.raises(BacklogError) as info:
        parse_backlog(data)
    assert info.value.problems == ['backlog must be an object {"cards": [ ... ]}']


def test_a_bare_list_of_cards_is_accepted() -> None:
    assert [s.card_id for s in parse_backlog([{"card_id": "A", "title": "a"}])] == ["A"]


def test_a_card_depending_on_itself_is_reported_once() -> None:
    with pytest.raises(BacklogError) as info:
        parse_backlog({"cards": [{"card_id": "A", "title": "a", "depends_on": ["A"]}]})
    assert info.value.problems == ["card A: depends on itself"]


def test_a_longer_cycle_is_reported_with_its_path() -> None:
    cards = [{"card_id": "A", "title": "a", "depends_on": ["C"]}, {"card_id": "B", "title": "b", "depends_on": ["A"]},
             {"card_id": "C", "title": "c", "depends_on": ["B"]}, {"card_id": "D", "title": "d", "depends_on": ["A"]}]
    with pytest.raises(BacklogError) as info:
        parse_backlog({"cards": cards})
    (problem,) = info.value.problems
    assert "dependency cycle" in problem
    assert {"A", "B", "C"} <= set(problem.split("cycle ")[1].split(" -> "))


def test_invalid_json_and_yaml_are_one_problem_naming_the_file(tmp_path: Path) -> None:
    bad_json = tmp_path / "b.json"
    bad_json.write_text('{"cards": [', encoding="utf-8")
    bad_yaml = tmp_path / "b.yaml"
    bad_yaml.write_text("cards: [\n  - {card_id: A\n", encoding="utf-8")
    for path, kind in ((bad_json, "JSON"), (bad_yaml, "YAML")):
        with pytest.raises(BacklogError) as info:
            validate_file(path)
        (problem,) = info.value.problems
        assert problem.startswith(f"{path}:") and f": not valid {kind}" in problem and "\n" not in problem


# ---- end to end through the CLI -----------------------------------------------------------------
def test_cli_import_of_a_broken_file_prints_one_line_per_problem_exits_2_and_writes_nothing(
        tmp_path: Path) -> None:
    # Given a file with duplicate ids, a bad id, an unknown dependency, priority 10, an unknown field,
    # a bad type and a cycle
    path = write(tmp_path / "broken.json", BROKEN)
    # When
    proc = run_cli("backlog", "import", str(path))
    # Expect every problem on its own line, exit 2, no traceback, no card written
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == len(BROKEN_EXPECT), proc.stderr
    for prefix, word in BROKEN_EXPECT:
        assert any(prefix in line and word in line for line in lines), (prefix, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert cli_cards() == []


def test_cli_imports_yaml_lists_it_and_refuses_a_second_import_without_update(tmp_path: Path) -> None:
    path = write(tmp_path / "backlog.yaml", BACKLOG)
    first = run_cli("backlog", "import", str(path))
    assert first.returncode == 0, first.stderr
    assert "imported 3 card(s)" in first.stdout
    cards = cli_cards()
    assert [c["card_id"] for c in cards] == ["API-1", "WEB-1", "API-2"]  # priority 9, 5, 2
    assert {c["status"] for c in cards} == {"TODO"}
    second = run_cli("backlog", "import", str(path))
    assert second.returncode == 2
    assert all("already exists" in line for line in error_lines(second.stderr))
    assert len(error_lines(second.stderr)) == 1


def test_cli_update_rewrites_cards_still_todo(tmp_path: Path) -> None:
    path = write(tmp_path / "backlog.json", BACKLOG)
    assert run_cli("backlog", "import", str(path)).returncode == 0
    changed = json.loads(json.dumps(BACKLOG))
    changed["cards"][1]["title"] = "Document it twice"
    proc = run_cli("backlog", "import", "--update", str(write(tmp_path / "changed.json", changed)))
    assert proc.returncode == 0, proc.stderr
    assert "updated 3" in proc.stdout
    assert next(c for c in cli_cards() if c["card_id"] == "API-2")["title"] == "Document it twice"


def test_cli_export_then_import_into_a_fresh_database_round_trips(tmp_path: Path) -> None:
    # Given the backlog imported into the default database
    assert run_cli("backlog", "import", str(write(tmp_path / "backlog.json", BACKLOG))).returncode == 0
    # When exported (to stdout and to a YAML file) and imported into another database
    to_stdout = run_cli("backlog", "export")
    assert to_stdout.returncode == 0, to_stdout.stderr
    to_file = run_cli("backlog", "export", str(tmp_path / "exported.yaml"))
    assert to_file.returncode == 0, to_file.stderr
    other = squad_env(SQUAD_DATABASE_URL=f"sqlite:///{tmp_path / 'other.db'}")
    imported = run_cli("backlog", "import", str(tmp_path / "exported.yaml"), env=other)
    assert imported.returncode == 0, imported.stderr
    again = run_cli("backlog", "export", env=other)
    # Expect the same backlog on both sides, equal to the original fields
    assert json.loads(again.stdout) == json.loads(to_stdout.stdout)
    assert yaml.safe_load((tmp_path / "exported.yaml").read_text()) == json.loads(to_stdout.stdout)
    exported = {c["card_id"]: c for c in json.loads(to_stdout.stdout)["cards"]}
    assert exported["API-1"] == FULL_CARD


def test_cli_validate_accepts_a_good_file_and_rejects_a_bad_one_without_touching_the_store(tmp_path: Path) -> None:
    good = run_cli("backlog", "validate", str(write(tmp_path / "good.yaml", BACKLOG)))
    assert good.returncode == 0, good.stderr
    assert "3 card(s), valid" in good.stdout
    bad = run_cli("backlog", "validate", str(write(tmp_path / "bad.json", BROKEN)))
    assert bad.returncode == 2
    assert len(error_lines(bad.stderr)) == len(BROKEN_EXPECT)
    assert not (tmp_path / ".squad" / "squad.db").exists()


@pytest.mark.parametrize("args", [["backlog", "import", "missing.json"], ["backlog", "validate", "missing.yaml"]])
def test_cli_missing_backlog_file_is_one_line_exit_2(args: list[str]) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "no such file" in lines[0]


# ---- one way to add cards -----------------------------------------------------------------------
def test_every_way_of_adding_a_card_emits_the_same_status_event_and_refuses_a_duplicate_alike(
        tmp_path: Path, settings: Settings, api: ApiServer) -> None:
    # Given one store and its event stream, and the four ways in: a backlog import, `squad card add`,
    # POST /api/cards and the Python submit API. Each answers None when it added the card, else the
    # text of its refusal: in the process the DuplicateCardError itself, from the CLI and the API what
    # they show of it (with its exit code and HTTP status).
    store = api.state.store
    bus = EventBus(settings.events, store.redis_keys)
    env = squad_env(SQUAD_DATABASE_URL=settings.database_url, SQUAD_REDIS_URL=settings.redis_url)

    def in_process(add: Callable[[], object], card_id: str) -> str | None:
        try:
            add()
        except DuplicateCardError as exc:
            assert exc.card_ids == [card_id]
            return str(exc)
        return None

    def imported(card_id: str) -> str | None:
        path = write(tmp_path / f"{card_id}.json", {"cards": [{"card_id": card_id, "title": "t"}]})
        return in_process(lambda: import_file(store, path, settings=settings, events=bus), card_id)

    def submitted(card_id: str) -> str | None:
        return in_process(lambda: submit_group(settings, [{"card_id": card_id, "title": "t"}]), card_id)

    def cli_added(card_id: str) -> str | None:
        proc = run_cli("card", "add", "--id", card_id, "--title", "t", env=env)
        if proc.returncode == 0:
            return None
        assert proc.returncode == DuplicateCardError.exit_code, proc.stderr
        return proc.stderr.strip().removeprefix("squad: error: ")

    def api_added(card_id: str) -> str | None:
        with api.client() as http:
            res = http.post("/api/cards", json={"card_id": card_id, "title": "t"})
        if res.status_code == 201:
            return None
        assert res.status_code == DuplicateCardError.http_status, res.text
        return str(res.json()["detail"])

    paths = {"IMPORTED": imported, "SUBMITTED": submitted, "CLI": cli_added, "API": api_added}
    for card_id, add in paths.items():
        # When each path adds its card, then the same card again
        assert add(card_id) is None, card_id
        # Expect the second add refused as the same DuplicateCardError, naming the card
        assert add(card_id) == str(DuplicateCardError([card_id])), card_id
    # ... and exactly one status event per card, the same for every path: TODO, no task
    events = [fields for _id, fields in bus.redis.xrange(store.redis_keys.task_updates)
              if fields.get("type") == "status"]
    assert [{k: v for k, v in e.items() if k != "timestamp"} for e in events] == [
        {"type": "status", "card_id": card_id, "task_id": "", "status": "TODO"} for card_id in paths]
    assert all(store.get_card(card_id).status == Status.TODO for card_id in paths)
    bus.close()


def test_cards_added_together_are_announced_in_one_event_per_thousand_on_both_streams(
        store: CardStore, tmp_path: Path, redis_url: str) -> None:
    # Given an event bus on the store's namespace, and a backlog of 2,500 cards (a chain every 10)
    bus = EventBus(redis_url, store.redis_keys)
    keys = store.redis_keys
    ids = [f"IMP-{i:04d}" for i in range(2500)]
    backlog = {"cards": [{"card_id": cid, "title": f"card {i}", "labels": ["bulk"], "acceptance_criteria": ["ok"],
                          "depends_on": [ids[i - 1]] if i % 10 else []} for i, cid in enumerate(ids)]}
    # When it is imported
    assert import_file(store, write(tmp_path / "big.json", backlog), events=bus) == (2500, 0)
    # Expect three `added` events on task_updates naming every new card once, in file order, and
    # the same three wake-ups on `settled`, which the orchestrators read as one TODO per card
    events = [fields for _id, fields in bus.redis.xrange(keys.task_updates)]
    assert [(e["type"], e["status"], e["count"]) for e in events] == [("added", "TODO", "1000"),
                                                                      ("added", "TODO", "1000"),
                                                                      ("added", "TODO", "500")]
    assert [cid for e in events for cid in json.loads(e["card_ids"])] == ids
    found, _last = bus.wait_status("0-0", block_s=1.0)
    assert found == [(cid, "TODO") for cid in ids]
    assert bus.redis.xlen(keys.settled) == 3
    # ... and every card stored as the file says (the rows go in by a prebuilt statement)
    assert export_backlog(store)["cards"][:11] == [
        {"card_id": cid, "title": f"card {i}", "description": "", "acceptance_criteria": ["ok"],
         "squad": None, "agent": None, "priority": 5, "depends_on": [ids[i - 1]] if i % 10 else [],
         "labels": ["bulk"], "workdir": None, "time_limit": None, "soft_time_limit": None, "max_retries": None}
        for i, cid in enumerate(ids[:11])]
    bus.close()


def test_text_no_store_can_hold_is_reported_per_card_with_the_other_problems(store: CardStore,
                                                                            tmp_path: Path) -> None:
    # Given a backlog with a NUL character, a lone surrogate in a list and a title over its bound
    backlog = {"cards": [{"card_id": "N", "title": "a\x00b"},
                         {"card_id": "S", "title": "s", "labels": ["ok", "bad\ud800"]},
                         {"card_id": "L", "title": "t" * 501, "acceptance_criteria": ["fine", "x\x00"]}]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(backlog), encoding="utf-8")  # \u0000 and \ud800 as JSON escapes
    # When it is imported
    with pytest.raises(BacklogError) as err:
        import_file(store, path)
    # Expect one line per problem, naming the card and the field, and nothing written
    assert err.value.problems == ["card N: title: must not contain NUL characters",
                                  "card S: labels.1: not valid UTF-8 text",
                                  "card L: title: String should have at most 500 characters",
                                  "card L: acceptance_criteria: must not contain NUL characters (item 1)"]
    assert store.count_cards() == 0
