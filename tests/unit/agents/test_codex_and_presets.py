"""The Codex `exec --json` parser on recorded samples (tests/agents/samples/codex_*.jsonl), and the
agent presets that `squad init` and the built-in agents share."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from squad.agents.parsers import CodexJsonParser, LineResult, make_parser
from squad.agents.presets import PRESETS, agents_toml, all_agents
from squad.agents.runner import build_command
from squad.core.settings import load_settings
from squad.ops.deploy import SQUAD_TOML
from support.paths import SAMPLES

THREAD = "0199a213-81c0-7800-8aa1-bbab2a035a53"


def feed(name: str) -> tuple[CodexJsonParser, list[LineResult]]:
    parser = make_parser("codex-json")
    assert isinstance(parser, CodexJsonParser)
    lines = (SAMPLES / name).read_text(encoding="utf-8").splitlines()
    return parser, [parser.feed(line, "stdout") for line in lines]


def test_a_completed_codex_turn_succeeds_with_its_session_tokens_and_steps() -> None:
    parser, results = feed("codex_success.jsonl")
    assert parser.verdict(0) is None
    usage = parser.usage
    assert (usage.session_id, usage.input_tokens, usage.output_tokens, usage.num_turns) == (THREAD, 24763, 122, 1)
    assert (usage.cache_read_tokens, usage.cache_creation_tokens) == (24448, None)  # included in input_tokens
    steps = [(r.progress, r.step) for r in results if r.step]
    assert (40, "run bash -lc 'rg -n health src'") in steps
    assert (70, "edit src/app.py, tests/test_app.py") in steps
    messages = [r.message for r in results]
    assert "assistant: Added the version and a timestamp to /health, with a test." in messages
    assert any(m.startswith("command exited 0: run bash -lc 'pytest -q': 2 passed") for m in messages)
    assert [p for p, _s in steps] == sorted(p for p, _s in steps)  # progress never goes down


@pytest.mark.parametrize(("sample", "error"), [
    ("codex_turn_failed.jsonl", "stream disconnected before completion: Rate limit reached"),
    ("codex_error_only.jsonl", "unexpected status 401 Unauthorized"),
    ("codex_truncated.jsonl", "agent ended without a completed turn"),
])
def test_a_failed_or_unfinished_codex_turn_fails_the_attempt_even_with_exit_code_0(sample: str, error: str) -> None:
    parser, _results = feed(sample)
    verdict = parser.verdict(0)
    assert verdict is not None and verdict.startswith(error)


# ---- real `codex exec --json` runs (tests/agents/samples/SOURCES.md) ----------------------------
def test_codex_reconnecting_errors_before_a_completed_turn_are_warnings_and_the_run_succeeds() -> None:
    # Given a real run: five "Reconnecting... N/5" error events, then the turn completes (exit 0)
    parser, results = feed("codex_reconnect_then_completed.jsonl")
    # Expect success: the turn's end decides, as it does for Codex itself
    assert parser.verdict(0) is None
    assert (parser.usage.input_tokens, parser.usage.output_tokens) == (1234, 7)
    # ... and the retried errors logged as WARNING lines, text kept
    warnings = [r.message for r in results if r.level == "WARNING"]
    assert sum(m.startswith("error: Reconnecting... ") for m in warnings) == 5
    assert any(m.startswith("item error: Falling back from WebSockets to HTTPS") for m in warnings)
    assert "assistant: OK" in [r.message for r in results]
    # ... while the process result still counts
    assert parser.verdict(1) == "exit code 1"


@pytest.mark.parametrize(("sample", "error"), [
    ("codex_bad_model_json_error.jsonl",
     "The 'definitely-not-a-model' model is not supported when using Codex with a ChatGPT account. (status 400)"),
    ("codex_crema_error_detail_json.jsonl",
     "The 'gpt-5.2-codex' model is not supported when using Codex with a ChatGPT account."),
    ("codex_quota_turn_failed.jsonl", "You've hit your usage limit. Try again later."),
])
def test_a_real_failed_codex_turn_fails_with_its_message_even_when_the_text_is_a_json_document(
        sample: str, error: str) -> None:
    parser, results = feed(sample)
    assert parser.verdict(0) == error and parser.verdict(1) == error
    assert f"turn failed: {error}" in [r.message for r in results]
    assert f"error: {error}" in [r.message for r in results if r.level == "WARNING"]


def test_an_error_event_with_no_turn_end_after_it_fails_the_attempt_with_that_error() -> None:
    parser = make_parser("codex-json")
    for line in ('{"type":"thread.started","thread_id":"t-1"}', '{"type":"turn.started"}',
                 '{"type":"error","message":"Reconnecting... 5/5 (stream disconnected)"}'):
        parser.feed(line, "stdout")
    assert parser.verdict(0) == "Reconnecting... 5/5 (stream disconnected)"


@pytest.mark.parametrize(("sample", "tokens"), [
    # (input, of which cached, cache written, output)
    ("codex_agentcmd_stream_output_2.jsonl", (6040, 4992, None, 129)),
    ("codex_success_with_error_item.jsonl", (19554, 4352, 0, 42)),
    ("codex_empty_agent_message.jsonl", (18341, 15616, 0, 130)),
])
def test_real_completed_codex_turns_keep_input_tokens_as_codex_counts_them_and_the_cached_split(
        sample: str, tokens: tuple[int, int, int | None, int]) -> None:
    parser, results = feed(sample)
    usage = parser.usage
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_creation_tokens, usage.output_tokens) == tokens
    assert parser.verdict(0) is None
    assert not [r for r in results if r.level not in (None, "WARNING")]


def test_a_resumed_codex_session_keeps_its_thread_id_and_a_nonzero_exit_still_fails() -> None:
    parser, _results = feed("codex_resumed.jsonl")
    assert parser.usage.session_id == THREAD and parser.usage.output_tokens == 88
    assert parser.verdict(0) is None and parser.verdict(1) == "exit code 1"


def test_codex_parser_treats_junk_and_stderr_as_text() -> None:
    parser = make_parser("codex-json")
    assert parser.feed("{not json", "stdout").message == "{not json"
    assert parser.feed('{"type":"error","message":"x"}', "stderr").message == '{"type":"error","message":"x"}'
    assert parser.feed("[1, 2]", "stdout").message == "[1, 2]"
    assert parser.verdict(0) == "agent ended without a completed turn"


def test_codex_resume_continues_the_thread_with_the_prompt_last(tmp_path: Path) -> None:
    agent = PRESETS["codex"].config
    argv, stdin = build_command(agent, agent_name="codex", card_id="C", workdir=tmp_path, attempt=2,
                                prompt="do it", prompt_file=tmp_path / "p.md", resume_session_id=THREAD)
    assert argv == ["codex", "exec", "--json", "--full-auto", "--skip-git-repo-check",
                    "-c", 'mcp_servers.squad.command="squad"', "-c", 'mcp_servers.squad.args=["mcp"]',
                    "resume", THREAD, "do it"]
    assert stdin is None


def test_squad_init_template_is_generated_from_the_presets_and_loads_as_the_same_agents(tmp_path: Path,
                                                                                        monkeypatch: pytest.MonkeyPatch
                                                                                        ) -> None:
    assert agents_toml() in SQUAD_TOML
    (tmp_path / "squad.toml").write_text(SQUAD_TOML, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert tomllib.loads(SQUAD_TOML)["default_agent"] in PRESETS
    for name, preset in PRESETS.items():
        assert settings.agents[name] == preset.config
        assert all_agents(settings)[name] == preset.config
        assert all_agents(settings)[name].parser in ("claude-stream-json", "codex-json", "plain")
