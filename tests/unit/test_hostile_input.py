"""Hostile input, property-tested: any bytes an agent prints become an outcome, any backlog file
becomes a clean error or a whole import; the helpers that make text safe to print and to log."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squad.actions.backlog import import_file
from squad.agents.parsers import ClaudeStreamJsonParser, make_parser, valid_session_id
from squad.core.errors import SquadError
from squad.core.masking import mask_text, mask_url
from squad.core.safetext import escape_controls, excerpt
from squad.core.settings import load_settings
from squad.store.card_store import CardStore

PARSERS = ("markers", "plain", "claude-stream-json", "codex-json")
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20)
EVENT_KEYS = st.sampled_from(["type", "subtype", "session_id", "total_cost_usd", "num_turns", "usage",
                              "input_tokens", "output_tokens", "is_error", "result", "message", "content",
                              "errors", "cwd", "model", "name", "input", "text"])
EVENTS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.sampled_from(["system", "assistant", "user", "result", "success", "tool_use", "text", "init"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(EVENT_KEYS, inner, max_size=6),
    max_leaves=15)


# ---- parsers: any bytes -> an outcome -----------------------------------------------------------
@pytest.mark.parametrize("name", PARSERS)
@given(data=st.binary(max_size=4096))
@settings(max_examples=150, deadline=None)
def test_any_bytes_become_log_lines_and_a_verdict(name: str, data: bytes) -> None:
    parser = make_parser(name)
    for line in data.decode("utf-8", errors="replace").splitlines():
        for stream in ("stdout", "stderr"):
            result = parser.feed(line, stream)
            assert isinstance(result.message, str)
            assert result.progress is None or 0 <= result.progress <= 100
    parser.verdict(0)
    parser.verdict(1)


@given(event=EVENTS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_json_event_leaves_usage_that_a_store_can_hold(event: Any) -> None:
    parser = ClaudeStreamJsonParser()
    parser.feed(json.dumps(event), "stdout")
    parser.feed(json.dumps({"type": "result", "subtype": "success", **(event if isinstance(event, dict) else {})}),
                "stdout")
    usage = parser.usage
    for value in (usage.cost_usd, usage.num_turns, usage.input_tokens, usage.output_tokens):
        assert value is None or (0 <= value <= 2**31 - 1 or value == usage.cost_usd)
    assert usage.cost_usd is None or (usage.cost_usd >= 0 and usage.cost_usd < float("inf"))
    assert usage.session_id is None or valid_session_id(usage.session_id) == usage.session_id


@pytest.mark.parametrize("name", ["claude-stream-json", "codex-json"])
@pytest.mark.parametrize("line", [
    "[" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000,
    '{"type": "turn.completed", "usage": {"input_tokens": 1e400, "output_tokens": -5}}',
    '{"type": "thread.started", "thread_id": "-rf --evil"}',
    '{"type": "result", "subtype": "success", "num_turns": Infinity, "total_cost_usd": NaN}',
    '{"type": "result", "subtype": "success", "num_turns": 1e400, "usage": {"input_tokens": -1e400}}',
    '{"type": "result", "subtype": "success", "num_turns": ' + "9" * 5000 + "}",
])
def test_pathological_json_lines_are_outcomes_not_crashes(name: str, line: str) -> None:
    parser = make_parser(name)
    result = parser.feed(line, "stdout")
    assert isinstance(result.message, str)
    usage = parser.usage
    assert usage.num_turns is None or 0 <= usage.num_turns <= 2**31 - 1
    for tokens in (usage.input_tokens, usage.output_tokens):
        assert tokens is None or 0 <= tokens <= 2**31 - 1
    assert usage.session_id is None or valid_session_id(usage.session_id) == usage.session_id


@pytest.mark.parametrize(("raw", "kept"), [
    ("5b0e7d9a-1f3c-4a8e", True), ("a" * 128, True), ("a" * 129, False), ("has space", False),
    ("-rf", False), ("--resume", False), ("", False), ("x\ny", False), ("ok:1.2_3", True),
])
def test_only_plain_session_ids_reach_resume(raw: str, kept: bool) -> None:
    assert (valid_session_id(raw) == raw) is kept


@pytest.mark.parametrize("line", [" " * 65536, "::progress 5" + " " * 65536 + "x",
                                  "::progress 5 " + "a " * 32768 + "\x0b", "::progress" + "\t" * 65536])
def test_progress_marker_matching_is_linear(line: str) -> None:
    # A quadratic pattern takes seconds on these 64 KiB lines; a linear one well under a millisecond
    # per KiB. The bound is generous (shared CI machines), the shape of the input is the test.
    parser = make_parser("markers")
    started = time.perf_counter()
    for _ in range(10):
        parser.feed(line, "stdout")
    assert time.perf_counter() - started < 2.0


def test_markers_still_parse() -> None:
    parser = make_parser("markers")
    result = parser.feed("  ::progress 55   writing the tests  ", "stdout")
    assert (result.progress, result.step) == (55, "writing the tests")
    assert make_parser("markers").feed("::progress 42", "stdout").progress == 42
    assert make_parser("markers").feed("::progress 42x", "stdout").progress is None


# ---- backlog import: any JSON/YAML -> clean error or whole import --------------------------------
CARDISH = st.fixed_dictionaries(
    {"card_id": st.one_of(st.from_regex(r"[A-Z]{1,3}", fullmatch=True), JSON_VALUES)},
    optional={"title": st.one_of(st.text(max_size=10), JSON_VALUES), "priority": JSON_VALUES,
              "depends_on": st.one_of(st.lists(st.from_regex(r"[A-Z]{1,3}", fullmatch=True), max_size=3),
                                      JSON_VALUES),
              "workdir": st.one_of(st.sampled_from(["a", "../x", "/etc", "~/x", "a/../../b"]), JSON_VALUES),
              "time_limit": JSON_VALUES, "labels": JSON_VALUES, "max_retries": JSON_VALUES})
BACKLOGS = st.one_of(JSON_VALUES, st.fixed_dictionaries({"cards": st.lists(CARDISH, max_size=5)}),
                     st.lists(CARDISH, max_size=5))


_STORES: dict[Path, CardStore] = {}


@given(data=BACKLOGS, as_yaml=st.booleans())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_backlog_imports_whole_or_fails_cleanly_with_nothing_stored(tmp_path: Path, data: Any,
                                                                        as_yaml: bool) -> None:
    # One store per test (opening one runs the migrations), emptied before each example.
    if tmp_path not in _STORES:
        _STORES[tmp_path] = CardStore(f"sqlite:///{tmp_path / 'p.db'}")
    store = _STORES[tmp_path]
    store.delete_cards([c.card_id for c in store.list_cards()])
    path = tmp_path / ("b.yaml" if as_yaml else "b.json")
    try:
        path.write_text(yaml.safe_dump(data) if as_yaml else json.dumps(data), encoding="utf-8")
    except (ValueError, yaml.YAMLError):
        return
    try:
        added, _ = import_file(store, path, settings=load_settings(workdir=tmp_path / "work"))
    except SquadError as exc:
        assert exc.exit_code == 2
        assert store.list_cards() == []
        return
    assert len(store.list_cards()) == added


# ---- safe text and masking ----------------------------------------------------------------------
@given(st.text())
def test_escaped_text_has_no_control_characters(text: str) -> None:
    shown = escape_controls(text)
    assert not any((ord(c) < 0x20 and c != "\t") or 0x7f <= ord(c) <= 0x9f for c in shown)


def test_excerpt_is_short_whatever_the_input() -> None:
    assert len(excerpt("x" * 1_000_000)) < 120
    assert excerpt("\x1b[2J") == "\\x1b[2J"


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
    ("rediss://user:p%40ss@h/1", "rediss://user:***@h/1"),
    ("postgresql+psycopg://squad:s3cr@t@db:5432/squad", "postgresql+psycopg://squad:***@db:5432/squad"),
    ("redis://h:6379/0?password=pw", "redis://h:6379/0?password=***"),
    ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
    ("sqlite:///.squad/squad.db", "sqlite:///.squad/squad.db"),
    # passwords that were not percent-encoded: a parser takes their tail for the host; all of it is hidden
    ("redis://:p@ss#w0rd@h:6379/0", "redis://:***@h:6379/0"),
    ("redis://:p@ss/w0rd@h:6379/0", "redis://:***@h:6379/0"),
    ("redis://:p@ss?w0rd@h:6379/0", "redis://:***@h:6379/0"),
    ("http://127.0.0.1:3000/ws/tasks?%74oken=tk&since=1", "http://127.0.0.1:3000/ws/tasks?%74oken=***&since=1"),
])
def test_mask_url_hides_every_password_form(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_mask_text_hides_passwords_of_urls_inside_messages() -> None:
    text = "Error 111 connecting to redis://:hunter2@10.0.0.1:6379/0 and postgresql://u:pw@db/x."
    masked = mask_text(text)
    assert "hunter2" not in masked and ":pw@" not in masked and "redis://:***@10.0.0.1:6379/0" in masked


# ---- squad up's view ----------------------------------------------------------------------------
@pytest.mark.parametrize("live", [False, True])
def test_squad_up_view_shows_hostile_card_text_escaped_and_never_as_markup(tmp_path: Path, live: bool) -> None:
    import io

    from rich.console import Console

    from squad.ops.up_view import CardLine, UpView

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=200, highlight=False)
    hostile = [CardLine(card_id="EVIL", status="FAILED", progress=50, step="::progress 50 [/] \x1b]0;t\x07",
                        attempts=1, error="[bold]boom[/] \x1b[2J", next_in_s=None),
               CardLine(card_id="RUN", status="IN_PROGRESS", progress=40, step="[/] step \x9b", attempts=1,
                        error="", next_in_s=None)]
    view = UpView(console, live=False, api_url="http://127.0.0.1:3000", redis_desc="r", store_desc="s",
                  logs_dir=tmp_path, started=time.monotonic())
    if live:
        console.print(view._render(hostile, True, [], {}, 1.0))
    else:
        view.update(hostile, api_ready=True, workers=[], children={})
    text = buffer.getvalue()
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text
    assert "[bold]boom[/]" in text and "\\x1b[2J" in text


@given(st.text(max_size=30), st.text(max_size=30))
@settings(max_examples=200, deadline=None)
def test_review_feedback_with_a_nul_anywhere_or_only_blanks_is_refused_by_the_api_schema(
        before: str, after: str) -> None:
    # Given feedback text around a NUL character (the store cannot hold it), and blank-only feedback
    from pydantic import ValidationError

    from squad.api.schemas import RejectIn

    # Expect the request body refused (a 422), whatever surrounds the NUL
    for feedback in (f"{before}\x00{after}", " \t\n"):
        with pytest.raises(ValidationError):
            RejectIn(feedback=feedback)
    # And text without NUL and with a letter or digit in it accepted
    if "\x00" not in before + after and any(c.isalnum() for c in before + after):
        assert RejectIn(feedback=before + after).feedback == before + after
