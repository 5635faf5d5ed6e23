"""Progress parsers: markers, keywords, Claude stream-json events, estimates, verdicts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from squad.agents.parsers import (
    ClaudeStreamJsonParser,
    LineResult,
    MarkersParser,
    PlainParser,
    ProgressParser,
    make_parser,
)
from squad.core.errors import ConfigError
from support.paths import SAMPLES


def feed_sample(parser: ProgressParser, name: str) -> list[LineResult]:
    lines = (SAMPLES / name).read_text(encoding="utf-8").splitlines()
    return [parser.feed(line, "stdout") for line in lines]


# ---- factory ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "cls"),
    [("markers", MarkersParser), ("plain", PlainParser), ("claude-stream-json", ClaudeStreamJsonParser)],
)
def test_make_parser_returns_a_fresh_parser_of_the_named_kind(name: str, cls: type[ProgressParser]) -> None:
    # When
    first, second = make_parser(name), make_parser(name)
    # Expect
    assert isinstance(first, cls) and first.name == name
    assert first is not second and first.usage is not second.usage


def test_make_parser_rejects_an_unknown_name_with_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown parser 'json'"):
        make_parser("json")


# ---- markers and keywords -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["markers", "plain", "claude-stream-json"])
def test_every_parser_honours_a_progress_marker(name: str) -> None:
    # Given
    parser = make_parser(name)
    # When
    result = parser.feed("::progress 55 running the tests", "stdout")
    # Expect
    assert (result.progress, result.step) == (55, "running the tests")
    assert result.message == "::progress 55 running the tests"


@pytest.mark.parametrize("name", ["markers", "plain", "claude-stream-json"])
@pytest.mark.parametrize(("line", "expected"), [("Reading src/app.py", 40), ("now WRITING docs/x.md", 70)])
def test_keywords_set_reading_and_writing_progress(name: str, line: str, expected: int) -> None:
    # Given
    parser = make_parser(name)
    # When
    result = parser.feed(line, "stderr")
    # Expect
    assert (result.progress, result.step, result.message) == (expected, line, line)


def test_keyword_step_is_cut_to_80_characters() -> None:
    result = make_parser("plain").feed("reading " + "a" * 200, "stdout")
    assert result.step is not None and len(result.step) == 80


def test_marker_progress_is_clamped_to_the_agent_range() -> None:
    # Given
    low, high = make_parser("markers"), make_parser("markers")
    # When
    below = low.feed("::progress 5 warming up", "stdout")
    above = high.feed("::progress 100 done already", "stdout")
    # Expect: agents own 30..99; 100 is reserved for the orchestrator's "done"
    assert below.progress == 30 and above.progress == 99


def test_progress_never_goes_down_but_the_step_still_changes() -> None:
    # Given
    parser = make_parser("markers")
    parser.feed("::progress 80 testing", "stdout")
    # When
    result = parser.feed("::progress 45 analysing again", "stdout")
    keyword = parser.feed("reading more files", "stdout")
    # Expect
    assert (result.progress, result.step) == (80, "analysing again")
    assert keyword.progress == 80


@given(st.lists(st.one_of(st.integers(0, 150).map(lambda n: f"::progress {n} step {n}"),
                          st.sampled_from(["reading a", "writing b", "plain text", "::progress x", ""])),
                max_size=40))
def test_reported_progress_is_monotonic_and_within_range(lines: list[str]) -> None:
    # Given
    parser = make_parser("plain")
    seen = [parser.progress]
    # When
    for line in lines:
        result = parser.feed(line, "stdout")
        if result.progress is not None:
            seen.append(result.progress)
    # Expect
    assert seen == sorted(seen)
    assert all(30 <= value <= 99 for value in seen)


def test_a_line_without_progress_is_just_a_log_message() -> None:
    result = make_parser("markers").feed("compiling 3 modules", "stdout")
    assert result == LineResult(message="compiling 3 modules")


def test_malformed_marker_is_an_ordinary_line() -> None:
    result = make_parser("markers").feed("::progress lots", "stdout")
    assert result.progress is None


# ---- estimate -----------------------------------------------------------------------------------
def test_estimate_rises_from_30_toward_but_never_above_90() -> None:
    # Given
    parser = make_parser("plain")
    # When
    values = [parser.estimate(t) for t in (0, 10, 60, 120, 600, 10_000, 1e9)]
    # Expect
    assert values[0] == 30
    assert values == sorted(values)
    assert all(v is not None and v <= 90 for v in values)
    assert values[-1] is not None and values[-1] >= 89


def test_advance_applies_an_estimate_only_upwards() -> None:
    # Given
    parser = make_parser("plain")
    parser.feed("::progress 60 working", "stdout")
    # When / Expect
    assert parser.advance(50) is None
    raised = parser.advance(65)
    assert raised is not None and (raised.progress, raised.step) == (65, "working")


# ---- verdicts -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["markers", "plain"])
def test_markers_and_plain_verdict_is_the_exit_code(name: str) -> None:
    parser = make_parser(name)
    assert parser.verdict(0) is None
    assert parser.verdict(3) == "exit code 3"


# ---- claude stream-json -------------------------------------------------------------------------
def test_stream_json_success_records_session_usage_and_tool_steps() -> None:
    # Given
    parser = ClaudeStreamJsonParser()
    # When
    results = feed_sample(parser, "success.jsonl")
    # Expect
    steps = [r.step for r in results if r.step]
    assert steps == ["Read src/app.py", "Grep health", "Edit src/app.py", "Bash python -m pytest -q tests/test_app.py"]
    progress = [r.progress for r in results if r.progress is not None]
    assert progress == [40, 40, 70, 70]
    usage = parser.usage
    assert usage.session_id == "2f6c0b8e-4d1a-4c5e-9a7b-31e2d9c4f0a1"
    # every prompt token the model read: 37 fresh + 5,120 written to the cache + 48,210 read from it
    assert (usage.cost_usd, usage.num_turns, usage.input_tokens, usage.output_tokens) == (0.0873, 9, 53367, 1843)
    assert (usage.cache_read_tokens, usage.cache_creation_tokens) == (48210, 5120)
    assert parser.verdict(0) is None
    assert parser.verdict(2) == "exit code 2"


def test_stream_json_messages_are_short_human_summaries() -> None:
    # Given
    parser = ClaudeStreamJsonParser()
    # When
    messages = [r.message for r in feed_sample(parser, "success.jsonl")]
    # Expect
    assert messages[0].startswith("session 2f6c0b8e-4d1a-4c5e-9a7b-31e2d9c4f0a1 started")
    assert messages[1].startswith("assistant: I'll start by looking")
    assert messages[2] == "tool: Read src/app.py"
    assert messages[3].startswith("tool result: ")
    assert any(m.startswith("assistant: The endpoint") and "tool: Edit src/app.py" in m for m in messages)
    assert messages[-1].startswith("result: success, 9 turns, $0.0873: Done")
    assert all(len(m) < 700 for m in messages)


def test_stream_json_rate_limit_exiting_0_is_an_error_with_the_limit_text() -> None:
    # Given
    parser = ClaudeStreamJsonParser()
    # When
    feed_sample(parser, "rate_limit.jsonl")
    # Expect
    assert parser.verdict(0) == "Claude AI usage limit reached|1700000000"
    assert parser.usage.session_id == "5b0e7d9a-1f3c-4a8e-b2d6-9c0f1e2a3b4c"


def test_stream_json_error_subtype_is_an_error_even_when_is_error_is_false() -> None:
    # Given
    parser = ClaudeStreamJsonParser()
    # When
    feed_sample(parser, "error_max_turns.jsonl")
    # Expect
    assert parser.verdict(0) == "error_max_turns"
    assert parser.usage.num_turns == 3 and parser.usage.cost_usd == 0.0412


def test_stream_json_without_result_event_is_an_error_even_with_exit_0() -> None:
    # Given
    parser = ClaudeStreamJsonParser()
    # When
    results = feed_sample(parser, "truncated.jsonl")
    # Expect
    assert parser.verdict(0) == "agent ended without a result event"
    assert parser.usage.session_id == "c4e8a2b6-3d7f-4b1a-9e5c-2a6d8f0b4c1e"
    assert results[-1].message.startswith('{"type":"user"')  # the cut line is logged as-is
    assert results[-2].step == "Write src/models.py"


def test_stream_json_non_json_lines_are_logged_as_they_are() -> None:
    # Given
    parser = ClaudeStreamJsonParser()
    # When
    plain = parser.feed("npm WARN deprecated thing", "stdout")
    array = parser.feed("[1, 2]", "stdout")
    stderr = parser.feed('{"type": "result"}', "stderr")
    # Expect
    assert (plain.message, array.message, stderr.message) == (
        "npm WARN deprecated thing", "[1, 2]", '{"type": "result"}')
    assert parser.result is None


def test_stream_json_error_result_text_carries_its_subtype() -> None:
    # Given
    parser = ClaudeStreamJsonParser()
    # When
    parser.feed('{"type":"result","subtype":"error_during_execution","is_error":true,"result":"boom"}', "stdout")
    # Expect
    assert parser.verdict(0) == "error_during_execution: boom"


# ---- real Claude Code transcripts (tests/agents/samples/SOURCES.md) -----------------------------
@pytest.mark.parametrize(("sample", "tokens", "turns", "cost"), [
    # (fresh input, cache creation, cache read, output) as the `result` event's usage says
    ("claude_codecontextbench_success_cached.jsonl", (2, 6464, 57775, 606), 3, 0.0844475),
    ("claude_vecsum_line_84KB.jsonl", (109, 76972, 1249926, 26105), 26, 1.0669852),
    ("claude_json2treeviz_image_line_144KB.jsonl", (6, 6486, 40398, 398), 2, 0.0618464),
])
def test_real_claude_runs_count_every_prompt_token_the_model_read_and_keep_the_cache_split(
        sample: str, tokens: tuple[int, int, int, int], turns: int, cost: float) -> None:
    # Given a real Claude Code transcript whose `result.usage` has cache creation and cache read tokens
    parser = ClaudeStreamJsonParser()
    # When it is parsed line by line
    results = feed_sample(parser, sample)
    # Expect the run's input tokens to be all three input counts, the split kept, the verdict success
    fresh, written, read, out = tokens
    usage = parser.usage
    assert (usage.input_tokens, usage.cache_creation_tokens, usage.cache_read_tokens, usage.output_tokens) == (
        fresh + written + read, written, read, out)
    assert (usage.num_turns, usage.cost_usd) == (turns, cost)
    assert parser.verdict(0) is None
    assert all(len(r.message) < 700 for r in results)  # big tool results become short summaries


def test_claude_token_counts_are_clamped_and_their_sum_capped_to_what_the_store_holds() -> None:
    # Given a result whose counts are absurd (agents lie)
    parser = ClaudeStreamJsonParser()
    line = ('{"type":"result","subtype":"success","is_error":false,"result":"ok","usage":{"input_tokens":-5,'
            '"cache_creation_input_tokens":2000000000,"cache_read_input_tokens":2000000000,"output_tokens":"many"}}')
    # When
    result = parser.feed(line, "stdout")
    # Expect the negative clamped to 0, the sum capped to the INTEGER column, the junk dropped, with warnings
    usage = parser.usage
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (2**31 - 1, 2000000000, None)
    assert any("input_tokens" in w for w in result.warnings) and any("output_tokens" in w for w in result.warnings)
