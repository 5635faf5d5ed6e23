"""The agent runner with real subprocesses: streaming, limits, cancel, and no process left behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from squad.agents import runner
from squad.agents.parsers import PlainParser, ProgressParser, make_parser
from squad.agents.runner import AgentResult, Limits, build_command, expand_argv, run_agent
from squad.core.constants import LOG_LINE_MAX_BYTES, MAX_LINE_BYTES
from squad.core.settings import AgentConfig
from support.paths import AGENTS, SAMPLES, SRC
from support.processes import alive, read_pid

GENEROUS = Limits(soft_time_limit_s=60, time_limit_s=90, kill_grace_s=0.5)


class Recorder:
    """A RunObserver that keeps everything and can ask for a stop after a delay."""

    def __init__(self, stop_after_s: float | None = None, reason: str = "cancelled") -> None:
        self.lines: list[tuple[str, str]] = []
        self.progress: list[tuple[int, str]] = []
        self.stop_at = None if stop_after_s is None else time.monotonic() + stop_after_s
        self.reason = reason

    def on_line(self, level: str, message: str) -> None:
        self.lines.append((level, message))

    def on_progress(self, progress: int, step: str) -> None:
        self.progress.append((progress, step))

    def stop_reason(self) -> str | None:
        return self.reason if self.stop_at is not None and time.monotonic() >= self.stop_at else None

    def messages(self, level: str | None = None) -> list[str]:
        return [m for lvl, m in self.lines if level is None or lvl == level]


def fake(name: str, *args: str) -> list[str]:
    return [sys.executable, str(AGENTS / name), *args]


def run(
    argv: list[str],
    cwd: Path,
    *,
    limits: Limits = GENEROUS,
    parser: ProgressParser | str = "markers",
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    observer: Recorder | None = None,
) -> tuple[AgentResult, Recorder]:
    observer = observer or Recorder()
    result = run_agent(
        argv,
        cwd=cwd,
        env={**os.environ, **(env or {})},  # run_agent takes the complete environment
        stdin_data=stdin,
        parser=make_parser(parser) if isinstance(parser, str) else parser,
        limits=limits,
        observer=observer,
    )
    return result, observer


def gone_within(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


# ---- normal runs --------------------------------------------------------------------------------
def test_agent_lines_become_info_and_error_log_entries_with_progress(tmp_path: Path) -> None:
    # When
    result, seen = run(fake("markers.py"), tmp_path)
    # Expect
    assert (result.outcome, result.exit_code, result.error) == ("succeeded", 0, None)
    assert seen.messages("INFO")[:2] == ["::progress 45 analysing", "reading src/app.py"]
    assert seen.messages("STDERR") == ["a warning on stderr"]
    assert seen.progress[0] == (45, "analysing")
    assert (70, "writing src/app.py") in seen.progress
    assert seen.progress[-1] == (90, "running tests")
    values = [p for p, _ in seen.progress]
    assert values == sorted(values)


def test_failing_agent_is_failed_with_its_exit_code(tmp_path: Path) -> None:
    # When
    result, seen = run(fake("fail.py"), tmp_path)
    # Expect
    assert (result.outcome, result.exit_code, result.error) == ("failed", 3, "exit code 3")
    assert ("STDERR", "fatal: something broke") in seen.lines


@pytest.mark.parametrize(
    ("argv_factory", "cwd_name"),
    [
        (lambda tmp: ["/nonexistent/agent-binary"], "."),
        (lambda tmp: [str(tmp / "not-executable.sh")], "."),
        (lambda tmp: [sys.executable, "-c", "pass"], "missing-dir"),
    ],
    ids=["missing-program", "not-executable", "missing-cwd"],
)
def test_agent_that_cannot_start_is_spawn_failed_without_raising(
    tmp_path: Path, argv_factory: Callable[[Path], list[str]], cwd_name: str
) -> None:
    # Given
    (tmp_path / "not-executable.sh").write_text("echo hi\n")
    argv = argv_factory(tmp_path)
    # When
    result, seen = run(argv, tmp_path / cwd_name)
    # Expect
    assert result.outcome == "spawn_failed"
    assert result.error is not None and result.error.startswith("cannot start agent: ")
    assert result.exit_code is None
    assert seen.lines == []


def test_env_vars_and_cwd_reach_the_agent(tmp_path: Path) -> None:
    # Given
    env = {"SQUAD_CARD_ID": "API-12", "SQUAD_ATTEMPT": "2", "SQUAD_TASK_ID": "task-9", "MY_FLAG": "1"}
    # When
    result, seen = run(fake("echo_env.py"), tmp_path, env=env)
    # Expect
    shown = json.loads(seen.messages("INFO")[0])
    assert result.outcome == "succeeded"
    assert {k: shown[k] for k in env} == env
    assert shown["cwd"] == str(tmp_path)
    assert shown["stdin_len"] == 0  # no prompt on stdin: DEVNULL, never the worker's own stdin


def test_agent_run_from_a_worker_thread_lives_as_long_as_the_call(tmp_path: Path) -> None:
    # Given: the parent-death signal is tied to the spawning thread, which is the calling one
    results: list[AgentResult] = []
    # When
    thread = threading.Thread(target=lambda: results.append(run(fake("slow_then_ok.py", "1"), tmp_path)[0]))
    thread.start()
    thread.join(timeout=30)
    # Expect
    assert results and results[0].outcome == "succeeded"


# ---- commands and prompts -----------------------------------------------------------------------
def test_expand_argv_fills_known_placeholders_once_and_keeps_unknown_braces() -> None:
    # When
    argv = expand_argv(
        ["run", "--card={card_id}", "{agent}:{attempt}", "{unknown}", "{session_id}", "{{card_id}}"],
        {"card_id": "{agent}", "agent": "claude", "attempt": "2"},
    )
    # Expect: a value is never expanded again, unknown or unset placeholders stay literal
    assert argv == ["run", "--card={agent}", "claude:2", "{unknown}", "{session_id}", "{{agent}}"]


def echo_agent(prompt_mode: str, resume: list[str] | None = None) -> AgentConfig:
    return AgentConfig(
        command=[sys.executable, str(AGENTS / "echo_env.py"), "{card_id}", "{attempt}", "{agent}",
                 "{prompt_file}", "{workdir}", "{unknown}"],
        prompt=prompt_mode,  # type: ignore[arg-type]
        resume=resume,
    )


@pytest.mark.parametrize("mode", ["stdin", "arg", "file"])
def test_prompt_reaches_the_agent_in_each_prompt_mode(tmp_path: Path, mode: str) -> None:
    # Given
    prompt = "Implement the card.\nÜnïcode included.\n"
    prompt_file = tmp_path / "meta" / "prompt.md"
    argv, stdin = build_command(
        echo_agent(mode), agent_name="mine", card_id="API-12", workdir=tmp_path, attempt=3,
        prompt=prompt, prompt_file=prompt_file, resume_session_id=None,
    )
    # When
    result, seen = run(argv, tmp_path, stdin=stdin)
    # Expect
    shown = json.loads(seen.messages("INFO")[0])
    assert result.outcome == "succeeded"
    assert shown["argv"][:6] == ["API-12", "3", "mine", str(prompt_file), str(tmp_path), "{unknown}"]
    assert prompt_file.read_text(encoding="utf-8") == prompt  # written in every mode
    assert shown["stdin_len"] == (len(prompt.encode()) if mode == "stdin" else 0)
    assert shown["argv"][6:] == ([prompt] if mode == "arg" else [])


def test_resume_args_are_appended_only_with_a_session_id(tmp_path: Path) -> None:
    # Given
    agent = echo_agent("arg", resume=["--resume", "{session_id}", "--card", "{card_id}"])
    common = {"agent_name": "claude", "card_id": "C1", "workdir": tmp_path, "attempt": 2,
              "prompt": "go", "prompt_file": tmp_path / "p.md"}
    # When
    first, _ = build_command(agent, resume_session_id=None, **common)  # type: ignore[arg-type]
    retry, _ = build_command(agent, resume_session_id="sess-1", **common)  # type: ignore[arg-type]
    no_resume, _ = build_command(echo_agent("arg"), resume_session_id="sess-1", **common)  # type: ignore[arg-type]
    # Expect
    assert first[-1] == "go" and "--resume" not in first
    assert retry[-5:] == ["--resume", "sess-1", "--card", "C1", "go"]
    assert "--resume" not in no_resume


# ---- volume -------------------------------------------------------------------------------------
def test_big_prompt_on_stdin_with_big_output_does_not_deadlock(tmp_path: Path) -> None:
    # Given: 2 MB of prompt, echoed on stdout and stderr while the agent still reads
    prompt = b"".join(b"%07d " % i + b"p" * 91 + b"\n" for i in range(20_000))
    assert len(prompt) == 2_000_000
    # When
    result, seen = run(fake("cat.py"), tmp_path, stdin=prompt, parser="plain")
    # Expect
    assert result.outcome == "succeeded"
    assert len(seen.messages("INFO")) == 20_000 and len(seen.messages("STDERR")) == 20_000
    assert seen.messages("INFO")[-1].startswith("0019999 ")


def test_agent_that_never_reads_a_big_prompt_is_still_timed_out(tmp_path: Path) -> None:
    # When
    result, _ = run(fake("hang.py"), tmp_path, stdin=b"x" * 2_000_000,
                    limits=Limits(soft_time_limit_s=30, time_limit_s=1, kill_grace_s=0.5))
    # Expect
    assert result.outcome == "timeout"


def test_ten_megabytes_with_a_five_megabyte_line_is_streamed_and_the_giant_line_cut(tmp_path: Path) -> None:
    # When
    result, seen = run(fake("big_output.py"), tmp_path, parser="plain")
    # Expect
    lines = seen.messages("INFO")
    assert result.outcome == "succeeded"
    assert len(lines) == 50_002
    giant = lines[25_000]
    cut = 5 * 1024 * 1024 - LOG_LINE_MAX_BYTES
    assert giant == "B" * LOG_LINE_MAX_BYTES + f" …[truncated {cut} bytes]"
    assert lines[25_001] == "x" * 99 and lines[-1] == "last line"


# ---- limits, stall, cancel: no process survives -------------------------------------------------
def test_grandchild_ignoring_sigterm_is_killed_after_normal_exit(tmp_path: Path, reaper: list[int]) -> None:
    # Given
    pidfile = tmp_path / "gc.pid"
    # When
    result, seen = run(fake("grandchild.py", str(pidfile), "exit"), tmp_path)
    # Expect
    grandchild = read_pid(pidfile)
    reaper.append(grandchild)
    assert (result.outcome, result.exit_code) == ("succeeded", 0)
    assert "grandchild ready" in seen.messages("INFO")
    assert not alive(grandchild)


@pytest.mark.parametrize("mode", ["exit", "wait2"])
def test_grandchild_that_left_the_group_is_killed_after_normal_exit(
    tmp_path: Path, reaper: list[int], mode: str
) -> None:
    # Given: a grandchild in its own session, ignoring SIGTERM, holding the output pipes
    pidfile = tmp_path / "gc.pid"
    # When
    result, _ = run(fake("grandchild.py", str(pidfile), mode, "--setsid"), tmp_path)
    # Expect
    grandchild = read_pid(pidfile)
    reaper.append(grandchild)
    assert result.outcome == "succeeded"
    assert not alive(grandchild)


def test_grandchild_ignoring_sigterm_is_killed_on_soft_limit(tmp_path: Path, reaper: list[int]) -> None:
    # Given: the agent ignores SIGTERM too, so only the SIGKILL after the grace ends it
    pidfile = tmp_path / "gc.pid"
    limits = Limits(soft_time_limit_s=1, time_limit_s=30, kill_grace_s=0.5)
    # When
    result, _ = run(fake("grandchild.py", str(pidfile), "sleep", "--ignore-term"), tmp_path, limits=limits)
    # Expect
    grandchild = read_pid(pidfile)
    reaper.append(grandchild)
    assert (result.outcome, result.error) == ("soft_timeout", "soft time limit exceeded (1s)")
    assert result.exit_code == -signal.SIGKILL
    assert not alive(grandchild) and not alive(read_pid(pidfile.with_name(pidfile.name + ".agent")))


def test_soft_limit_ends_a_cooperative_agent_with_sigterm(tmp_path: Path) -> None:
    # When
    result, _ = run(fake("hang.py"), tmp_path, limits=Limits(soft_time_limit_s=1, time_limit_s=30))
    # Expect
    assert (result.outcome, result.exit_code) == ("soft_timeout", -signal.SIGTERM)


def test_grandchild_ignoring_sigterm_is_killed_on_hard_limit(tmp_path: Path, reaper: list[int]) -> None:
    # Given
    pidfile = tmp_path / "gc.pid"
    # 4 s: long enough for two Python start-ups on a loaded machine before the limit strikes
    limits = Limits(soft_time_limit_s=30, time_limit_s=4, kill_grace_s=5)
    # When
    result, _ = run(fake("grandchild.py", str(pidfile), "sleep"), tmp_path, limits=limits)
    # Expect: the hard limit does not wait for any grace
    grandchild = read_pid(pidfile)
    reaper.append(grandchild)
    assert (result.outcome, result.error) == ("timeout", "time limit exceeded (4s)")
    assert result.exit_code == -signal.SIGKILL
    assert not alive(grandchild)


def test_silent_agent_is_stalled_and_its_grandchild_killed(tmp_path: Path, reaper: list[int]) -> None:
    # Given
    pidfile = tmp_path / "gc.pid"
    limits = Limits(soft_time_limit_s=30, time_limit_s=60, stall_timeout_s=1, kill_grace_s=0.5)
    # When
    result, _ = run(fake("grandchild.py", str(pidfile), "sleep"), tmp_path, limits=limits)
    # Expect
    grandchild = read_pid(pidfile)
    reaper.append(grandchild)
    assert (result.outcome, result.error) == ("stalled", "stalled")
    assert not alive(grandchild)


def test_quiet_but_finishing_agent_is_not_stalled_when_stall_detection_is_off(tmp_path: Path) -> None:
    # When
    result, _ = run(fake("slow_then_ok.py", "1.5"), tmp_path,
                    limits=Limits(soft_time_limit_s=30, time_limit_s=60, stall_timeout_s=0))
    # Expect
    assert result.outcome == "succeeded"


def test_cancel_ends_the_group_with_the_stop_reason(tmp_path: Path, reaper: list[int]) -> None:
    # Given
    pidfile = tmp_path / "gc.pid"
    observer = Recorder(stop_after_s=1.0, reason="cancelled by user")
    # When
    result, _ = run(fake("grandchild.py", str(pidfile), "sleep", "--ignore-term"), tmp_path, observer=observer)
    # Expect
    grandchild = read_pid(pidfile)
    reaper.append(grandchild)
    assert (result.outcome, result.error) == ("cancelled", "cancelled by user")
    assert not alive(grandchild) and not alive(read_pid(pidfile.with_name(pidfile.name + ".agent")))


def test_observer_error_propagates_but_the_agent_is_ended_first(tmp_path: Path, reaper: list[int]) -> None:
    # Given
    pidfile = tmp_path / "agent.pid"

    class Broken(Recorder):
        def stop_reason(self) -> str | None:
            if pidfile.exists():
                raise RuntimeError("observer bug")
            return None

    # When
    with pytest.raises(RuntimeError, match="observer bug"):
        run(fake("hang.py", str(pidfile)), tmp_path, observer=Broken())
    # Expect
    agent = read_pid(pidfile)
    reaper.append(agent)
    assert not alive(agent)


HELPER = """
import sys
from pathlib import Path
from squad.agents.parsers import make_parser
from squad.agents.runner import Limits, run_agent

class Quiet:
    def on_line(self, level, message): pass
    def on_progress(self, progress, step): pass
    def stop_reason(self): return None

run_agent([sys.executable, sys.argv[1], sys.argv[2]], cwd=Path.cwd(), env={}, stdin_data=None,
          parser=make_parser("plain"), limits=Limits(60, 60), observer=Quiet())
"""


def test_agent_dies_when_the_process_running_it_is_killed(tmp_path: Path, reaper: list[int]) -> None:
    # Given: a worker-like helper supervising a silent agent
    pidfile = tmp_path / "agent.pid"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    helper = subprocess.Popen([sys.executable, "-c", HELPER, str(AGENTS / "hang.py"), str(pidfile)],
                              cwd=tmp_path, env=env)
    try:
        agent = read_pid(pidfile)
        reaper.append(agent)
        # When: the worker is killed without any chance to clean up
        helper.kill()
    finally:
        helper.wait(timeout=10)
    # Expect
    assert gone_within(agent, 2.0)


SANDBOXED_HELPER = """
import sys
from pathlib import Path
from squad.agents.parsers import make_parser
from squad.agents.runner import Limits, run_agent
from squad.agents.sandbox import build
from squad.core.settings import SandboxConfig

class Quiet:
    def on_line(self, level, message): pass
    def on_progress(self, progress, step): pass
    def stop_reason(self): return None

box = build(SandboxConfig(kind="bwrap"), workdir=Path.cwd(), program=sys.executable, ro_paths=[Path(sys.argv[1])])
run_agent([sys.executable, sys.argv[1], "hang.pid"], cwd=Path.cwd(), env={}, stdin_data=None,
          parser=make_parser("plain"), limits=Limits(60, 60), observer=Quiet(), sandbox=box)
"""


def test_sandboxed_agent_dies_when_the_process_running_it_is_killed(tmp_path: Path) -> None:
    # Given: a worker-like helper supervising a silent agent inside bwrap (which, not setpriv, sets
    # the parent-death signal there)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    helper = subprocess.Popen([sys.executable, "-c", SANDBOXED_HELPER, str(AGENTS / "hang.py")], cwd=tmp_path, env=env)
    try:
        read_pid(tmp_path / "hang.pid")  # its pid inside the sandbox's namespace: the agent runs
        tree = psutil.Process(helper.pid).children(recursive=True)
        assert any("hang.py" in " ".join(p.cmdline()) for p in tree)
        assert not any("setpriv" in " ".join(p.cmdline()) for p in tree)
        # When: the worker is killed without any chance to clean up
        helper.kill()
    finally:
        helper.wait(timeout=10)
    # Expect: bwrap and the agent gone with it
    for proc in tree:
        assert gone_within(proc.pid, 5.0), proc


# ---- claude stream-json through a real process --------------------------------------------------
def stream(tmp_path: Path, sample: str, code: int = 0) -> tuple[AgentResult, Recorder]:
    return run(fake("stream_json.py", str(SAMPLES / sample), str(code)), tmp_path, parser="claude-stream-json")


def test_stream_json_success_is_succeeded_with_usage_and_steps(tmp_path: Path) -> None:
    # When
    result, seen = stream(tmp_path, "success.jsonl")
    # Expect
    assert (result.outcome, result.error) == ("succeeded", None)
    assert (result.usage.num_turns, result.usage.cost_usd) == (9, 0.0873)
    assert result.usage.session_id == "2f6c0b8e-4d1a-4c5e-9a7b-31e2d9c4f0a1"
    assert (70, "Edit src/app.py") in seen.progress
    assert "tool: Read src/app.py" in seen.messages("INFO")


def test_stream_json_rate_limit_exiting_0_is_a_failure_with_the_limit_text(tmp_path: Path) -> None:
    # When
    result, _ = stream(tmp_path, "rate_limit.jsonl", 0)
    # Expect
    assert (result.outcome, result.exit_code) == ("failed", 0)
    assert result.error == "Claude AI usage limit reached|1700000000"


def test_stream_json_without_result_event_is_a_failure_even_with_exit_0(tmp_path: Path) -> None:
    # When
    result, _ = stream(tmp_path, "truncated.jsonl", 0)
    # Expect
    assert (result.outcome, result.error) == ("failed", "agent ended without a result event")
    assert result.usage.session_id == "c4e8a2b6-3d7f-4b1a-9e5c-2a6d8f0b4c1e"


def test_stream_json_max_turns_is_a_failure(tmp_path: Path) -> None:
    result, _ = stream(tmp_path, "error_max_turns.jsonl", 0)
    assert (result.outcome, result.error) == ("failed", "error_max_turns")


def test_stream_json_success_result_with_nonzero_exit_is_a_failure(tmp_path: Path) -> None:
    result, _ = stream(tmp_path, "success.jsonl", 2)
    assert (result.outcome, result.error) == ("failed", "exit code 2")


@pytest.mark.parametrize(("sample", "big_line", "summary"), [
    # real transcripts (tests/agents/samples/SOURCES.md): a file update's result, an image tool result
    ("claude_vecsum_line_84KB.jsonl", 83_871, "tool result: The file "),
    ("claude_json2treeviz_image_line_144KB.jsonl", 144_539, "tool result: [image]"),
])
def test_real_claude_lines_over_64_KiB_are_parsed_and_logged_bounded(
        tmp_path: Path, sample: str, big_line: int, summary: str) -> None:
    # Given a real transcript with a line far over 64 KiB
    assert max(len(line) for line in (SAMPLES / sample).read_bytes().splitlines()) == big_line
    # When an agent prints it
    result, seen = stream(tmp_path, sample)
    # Expect every event parsed: the big one logged as a short summary, not a raw cut excerpt
    assert (result.outcome, result.error) == ("succeeded", None)
    assert result.usage.cache_read_tokens is not None and result.usage.num_turns is not None
    assert any(m.startswith(summary) for m in seen.messages("INFO")), seen.messages("INFO")
    assert all(len(m) <= 4096 and "…[truncated" not in m for m in seen.messages())


def test_a_result_event_over_64_KiB_keeps_its_verdict_and_usage(tmp_path: Path) -> None:
    # Given a run whose final `result` line is 200 KB (a long answer)
    answer = "a long answer. " * 14_000
    sample = tmp_path / "long_result.jsonl"
    usage = {"input_tokens": 10, "cache_read_input_tokens": 90, "output_tokens": 7}
    sample.write_text(json.dumps({"type": "system", "subtype": "init", "session_id": "s-1"}) + "\n" + json.dumps(
        {"type": "result", "subtype": "success", "is_error": False, "num_turns": 4, "result": answer,
         "total_cost_usd": 0.5, "usage": usage}) + "\n")
    assert sample.stat().st_size > 200_000
    # When
    result, seen = run(fake("stream_json.py", str(sample)), tmp_path, parser="claude-stream-json")
    # Expect the verdict and the usage of that event, and a bounded log line
    assert (result.outcome, result.error) == ("succeeded", None)
    assert (result.usage.num_turns, result.usage.input_tokens, result.usage.cache_read_tokens) == (4, 100, 90)
    assert [m for m in seen.messages() if m.startswith("result: success, 4 turns")]
    assert all(len(m) <= 4096 for m in seen.messages())


def test_a_line_over_the_parse_bound_is_cut_counted_and_never_held_whole(tmp_path: Path) -> None:
    # Given an agent printing one JSON-looking line of MAX_LINE_BYTES + 1 MiB, then a real event
    size = MAX_LINE_BYTES + 1024 * 1024
    code = (f"import sys; sys.stdout.write('{{\"type\":\"user\",\"x\":\"' + 'y' * {size} + '\"}}\\n'); "
            "sys.stdout.write('{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false}\\n')")
    # When
    result, seen = run([sys.executable, "-c", code], tmp_path, parser="claude-stream-json")
    # Expect the giant line logged as its first LOG_LINE_MAX_BYTES and the count of the rest
    giant = [m for m in seen.messages("INFO") if m.startswith('{"type":"user"')]
    assert len(giant) == 1
    assert giant[0].endswith(f" …[truncated {size + 22 - LOG_LINE_MAX_BYTES} bytes]")
    assert len(giant[0].encode()) < LOG_LINE_MAX_BYTES + 100
    # ... and the next line still parsed
    assert (result.outcome, result.error) == ("succeeded", None)


# ---- time-based estimate ------------------------------------------------------------------------
class FastEstimate(PlainParser):
    """The real estimate is slow (minutes); this one climbs 40 points a second for the test."""

    def estimate(self, elapsed_s: float) -> int | None:
        return min(90, int(30 + 40 * elapsed_s))


def test_silent_agent_gets_a_rising_time_based_estimate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given
    monkeypatch.setattr(runner, "ESTIMATE_AFTER_S", 0.3)
    # When
    result, seen = run(fake("slow_then_ok.py", "2"), tmp_path, parser=FastEstimate())
    # Expect
    assert result.outcome == "succeeded"
    values = [p for p, _ in seen.progress]
    assert len(values) >= 2 and values == sorted(values) and len(set(values)) == len(values)
    assert all(step == "agent executing" for _, step in seen.progress)
    assert 30 < values[-1] <= 90


def test_late_low_marker_never_lowers_estimated_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given
    monkeypatch.setattr(runner, "ESTIMATE_AFTER_S", 0.3)
    script = "import time; time.sleep(1.5); print('::progress 35 late marker', flush=True)"
    # When
    result, seen = run([sys.executable, "-c", script], tmp_path, parser=FastEstimate())
    # Expect
    values = [p for p, _ in seen.progress]
    assert result.outcome == "succeeded"
    assert values == sorted(values) and values[-1] > 35
    assert seen.progress[-1][1] == "late marker"


# ---- the built-in demo agent --------------------------------------------------------------------
DEMO = [sys.executable, "-m", "squad.agents.demo"]


def demo_env(attempt: str, **extra: str) -> dict[str, str]:
    return {"PYTHONPATH": str(SRC), "SQUAD_CARD_ID": "DEMO-1", "SQUAD_ATTEMPT": attempt,
            "SQUAD_DEMO_DURATION": "0.5", **extra}


def test_demo_agent_reports_progress_and_edits_its_workdir(tmp_path: Path) -> None:
    # When
    result, seen = run(DEMO, tmp_path, stdin=b"Do the demo card.", env=demo_env("1"))
    # Expect
    assert result.outcome == "succeeded"
    assert "prompt of 17 characters" in seen.messages("INFO")[0]
    assert [p for p, _ in seen.progress] == sorted(p for p, _ in seen.progress)
    assert (95, "summarising") in seen.progress and seen.progress[-1][0] == 95
    assert any(m.startswith("warning:") for m in seen.messages("STDERR"))
    assert "card DEMO-1, attempt 1: done" in (tmp_path / "SQUAD_DEMO.md").read_text()


def test_demo_agent_fail_first_fails_only_the_first_attempt(tmp_path: Path) -> None:
    # When
    first, _ = run(DEMO, tmp_path, env=demo_env("1", SQUAD_DEMO_FAIL="first"))
    second, _ = run(DEMO, tmp_path, env=demo_env("2", SQUAD_DEMO_FAIL="first"))
    # Expect
    assert (first.outcome, first.error) == ("failed", "exit code 1")
    assert second.outcome == "succeeded"


def test_demo_agent_slow_mode_hangs_until_the_time_limit(tmp_path: Path) -> None:
    # When
    result, _ = run([*DEMO, "--slow"], tmp_path, env=demo_env("1"),
                    limits=Limits(soft_time_limit_s=1, time_limit_s=5, kill_grace_s=0.5))
    # Expect
    assert result.outcome == "soft_timeout"


# ---- escapees: double-forked, setsid daemons are ended through the subreaper ---------------------
@pytest.mark.parametrize(
    ("mode", "limits", "observer", "outcome"),
    [
        ("exit", GENEROUS, None, "succeeded"),
        ("sleep", Limits(soft_time_limit_s=3, time_limit_s=30, kill_grace_s=0.5), None, "soft_timeout"),
        ("sleep", Limits(soft_time_limit_s=30, time_limit_s=3, kill_grace_s=5), None, "timeout"),
        ("sleep", Limits(soft_time_limit_s=30, time_limit_s=60, stall_timeout_s=3, kill_grace_s=0.5), None,
         "stalled"),
        ("sleep", GENEROUS, 3.0, "cancelled"),
    ],
    ids=["normal-end", "soft-limit", "hard-limit", "stall", "cancel"],
)
def test_double_forked_setsid_daemon_is_ended_with_its_attempt(
    tmp_path: Path, reaper: list[int], mode: str, limits: Limits, observer: float | None, outcome: str
) -> None:
    # Given: an agent whose daemon left its group and session, lost its parent and ignores SIGTERM
    pidfile = tmp_path / "daemon.pid"
    # When
    result, seen = run(fake("double_fork.py", str(pidfile), mode), tmp_path, limits=limits,
                       observer=Recorder(stop_after_s=observer) if observer else None)
    # Expect
    daemon = read_pid(pidfile)
    reaper.append(daemon)
    assert result.outcome == outcome
    assert "daemon ready" in seen.messages("INFO")
    assert not alive(daemon)


def test_daemon_of_another_running_attempt_is_left_to_that_attempt(tmp_path: Path, reaper: list[int]) -> None:
    # Given: attempt A's daemon is alive while attempt B, in the same process, ends
    pid_a, pid_b = tmp_path / "a.pid", tmp_path / "b.pid"
    results: list[AgentResult] = []
    slow = threading.Thread(target=lambda: results.append(run(
        fake("double_fork.py", str(pid_a), "sleep"), tmp_path, observer=Recorder(stop_after_s=4.0))[0]))
    slow.start()
    daemon_a = read_pid(pid_a)
    reaper.append(daemon_a)
    # When
    result_b, _ = run(fake("double_fork.py", str(pid_b), "exit"), tmp_path)
    # Expect: B's daemon is gone, A's lives until A is cancelled
    reaper.append(read_pid(pid_b))
    assert result_b.outcome == "succeeded" and not alive(read_pid(pid_b))
    assert alive(daemon_a)
    slow.join(timeout=30)
    assert results and results[0].outcome == "cancelled"
    assert not alive(daemon_a)


DEDICATED_HELPER = """
import sys
from pathlib import Path
from squad.agents import orphans
from squad.agents.parsers import make_parser
from squad.agents.runner import Limits, run_agent

class Quiet:
    def on_line(self, level, message): pass
    def on_progress(self, progress, step): pass
    def stop_reason(self): return None

orphans.own_all_orphans()
result = run_agent([sys.executable, *sys.argv[1:]], cwd=Path.cwd(), env={}, stdin_data=None,
                   parser=make_parser("plain"), limits=Limits(60, 60, kill_grace_s=0.5), observer=Quiet())
print(result.outcome, flush=True)
"""


def test_daemon_that_scrubbed_its_environment_is_ended_in_a_process_dedicated_to_agents(
    tmp_path: Path, reaper: list[int]
) -> None:
    # Given: the daemon carries no task id, so only a dedicated process may claim it
    pidfile = tmp_path / "daemon.pid"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    # When
    done = subprocess.run([sys.executable, "-c", DEDICATED_HELPER, str(AGENTS / "double_fork.py"), str(pidfile),
                           "exit", "--clear-env"], cwd=tmp_path, env=env, capture_output=True, timeout=60,
                          check=False)
    # Expect
    daemon = read_pid(pidfile)
    reaper.append(daemon)
    assert done.stdout.decode().strip() == "succeeded", done.stderr.decode()[-2000:]
    assert gone_within(daemon, 2.0)


SUPERVISED = """
import sys, threading
from squad.ops.supervisor import Child, Supervisor

sup = Supervisor([Child("pool", [sys.executable, "-c", sys.argv[1], *sys.argv[2:]])], adopt_orphans=True)
sup.install_signal_handlers()
sup.run(poll_s=0.1)
"""


def test_supervisor_ends_what_a_killed_worker_process_leaves(tmp_path: Path, reaper: list[int]) -> None:
    # Given: a supervised "pool process" running an agent whose daemon it adopted
    pidfile, agent_pidfile = tmp_path / "daemon.pid", tmp_path / "agent.pid"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    helper = HELPER.replace("sys.argv[1], sys.argv[2]", "sys.argv[1], sys.argv[2], sys.argv[3]")
    sup = subprocess.Popen([sys.executable, "-c", SUPERVISED, helper, str(AGENTS / "double_fork.py"), str(pidfile),
                            "sleep"], cwd=tmp_path, env=env)
    try:
        daemon = read_pid(pidfile)
        reaper.append(daemon)
        pool = [p for p in psutil.Process(sup.pid).children() if p.pid != daemon]
        assert len(pool) == 1
        agent_pidfile.write_text("")
        # When: the pool process dies without any chance to clean up
        pool[0].kill()
        # Expect: its agent dies with it (parent-death signal) and the supervisor ends the daemon
        assert gone_within(daemon, 10.0)
    finally:
        sup.terminate()
        sup.wait(timeout=30)


def test_rlimits_reach_the_agent(tmp_path: Path) -> None:
    # Given
    from squad.core.settings import AgentRlimits

    script = ("import resource; print(*[resource.getrlimit(r)[0] for r in (resource.RLIMIT_AS, "
              "resource.RLIMIT_NOFILE, resource.RLIMIT_NPROC, resource.RLIMIT_FSIZE)])")
    limits = AgentRlimits(address_space_mb=4096, open_files=64, processes=5000, file_size_mb=10)
    # When
    result = run_agent([sys.executable, "-c", script], cwd=tmp_path, env={}, stdin_data=None,
                       parser=make_parser("plain"), limits=GENEROUS, observer=(seen := Recorder()),
                       rlimits=limits)
    # Expect
    assert result.outcome == "succeeded"
    assert seen.messages("INFO") == [f"{4096 * 2**20} 64 5000 {10 * 2**20}"]


def test_file_size_limit_stops_an_agent_writing_a_huge_file(tmp_path: Path) -> None:
    # Given
    from squad.core.settings import AgentRlimits

    script = "open('big', 'wb').write(b'x' * (3 * 2**20))"
    # When
    result = run_agent([sys.executable, "-c", script], cwd=tmp_path, env={}, stdin_data=None,
                       parser=make_parser("plain"), limits=GENEROUS, observer=Recorder(),
                       rlimits=AgentRlimits(file_size_mb=1))
    # Expect: SIGXFSZ (or EFBIG) ends it; the file never grew past the limit
    assert result.outcome == "failed"
    assert (tmp_path / "big").stat().st_size <= 2**20


def test_end_of_an_attempt_in_a_dedicated_process_spares_squads_own_git_helpers(tmp_path: Path) -> None:
    # Given a process dedicated to agents (local mode, a pool process) with two unmarked children:
    # one of squad's own helpers (a workspace `git` run for another attempt) and a leftover
    script = (
        "import os, subprocess, sys\n"
        "from squad.agents import orphans\n"
        "orphans.own_all_orphans()\n"
        "env = {k: v for k, v in os.environ.items() if k != 'SQUAD_TASK_ID'}\n"
        "helper = orphans.spawn(lambda: subprocess.Popen(['sleep', '60'], env=env))\n"
        "leftover = subprocess.Popen(['sleep', '60'], env=env)\n"
        "orphans.end_orphans('attempt-1', timeout_s=5.0)\n"
        "alive = [p.poll() is None for p in (helper, leftover)]\n"
        "helper.kill(); helper.wait()\n"
        "print(alive)\n"
    )
    # When one attempt ends there
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    # Expect the helper untouched (known by its pid) and the leftover ended
    assert out.stdout.strip() == "[True, False]", out.stdout + out.stderr


FRESH_HELPER = """
import os, subprocess, sys, threading, time
from pathlib import Path
from squad.agents import orphans

entered, release = Path(sys.argv[1]), Path(sys.argv[2])

def before_exec():  # the child, forked but not yet exec'd: it still shows our environment
    entered.write_text("x")
    deadline = time.monotonic() + 10
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.01)

orphans.own_all_orphans()
result = []
git = threading.Thread(target=lambda: result.append(orphans.run_helper(["true"], preexec_fn=before_exec)))
git.start()
deadline = time.monotonic() + 10
while not entered.exists() and time.monotonic() < deadline:
    time.sleep(0.01)
ending = threading.Thread(target=orphans.end_orphans, args=("attempt-1", 5.0))
ending.start()
ending.join(1.0)  # a window for the scan to run while the helper is between fork and exec
release.write_text("x")
git.join(30)
ending.join(30)
print(result[0].returncode)
"""


def test_the_end_of_an_attempt_never_takes_a_freshly_forked_helper_for_a_leftover(tmp_path: Path) -> None:
    # Given (issue 20 item 6) a dedicated process whose `git` helper for another card is forked but
    # not yet exec'd while one attempt ends (its /proc environ is still the parent's: no marker)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    # When
    out = subprocess.run([sys.executable, "-c", FRESH_HELPER, str(tmp_path / "entered"), str(tmp_path / "release")],
                         capture_output=True, text=True, timeout=60, check=False, env=env)
    # Expect the helper ran to its end (not -9)
    assert out.stdout.strip() == "0", out.stdout + out.stderr


SPOOFING_AGENT = (
    "import subprocess, sys\n"
    "subprocess.run(['sh', '-c', '( SQUAD_TASK_ID=squad-helper setsid sleep 302 & echo $! > \"$0\" )', sys.argv[1]],"
    " check=True)\n"
)


def test_a_leftover_claiming_to_be_a_squad_helper_is_ended_with_its_attempt(tmp_path: Path, reaper: list[int]) -> None:
    # Given (issue 21 item 8) an agent whose daemon sets the marker squad's helpers once carried
    pidfile = tmp_path / "daemon.pid"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    # When it runs in a process dedicated to agents
    done = subprocess.run([sys.executable, "-c", DEDICATED_HELPER, "-c", SPOOFING_AGENT, str(pidfile)],
                          cwd=tmp_path, env=env, capture_output=True, timeout=60, check=False)
    # Expect the daemon is gone with the attempt
    daemon = read_pid(pidfile)
    reaper.append(daemon)
    assert done.stdout.decode().strip() == "succeeded", done.stderr.decode()[-2000:]
    assert gone_within(daemon, 2.0)


def test_direct_children_names_the_children_of_every_thread_and_nothing_else() -> None:
    # Given two children of this process, one started from another thread (the kernel lists
    # children per thread), and a grandchild
    from squad.agents.orphans import direct_children

    procs: list[subprocess.Popen[bytes]] = []
    starter = threading.Thread(target=lambda: procs.append(subprocess.Popen(["sleep", "60"])))
    starter.start()
    starter.join()
    procs.append(subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True))
    try:
        deadline = time.monotonic() + 10
        while not psutil.Process(procs[1].pid).children() and time.monotonic() < deadline:
            time.sleep(0.01)
        grandchildren = {p.pid for p in psutil.Process(procs[1].pid).children()}
        assert grandchildren
        # When this process's children are listed
        found = set(direct_children())
        # Expect both (and what a full scan finds: a session-wide fixture's server may be a child
        # too), never the grandchild
        assert {p.pid for p in procs} <= found == {p.pid for p in psutil.Process().children()}
        assert not found & grandchildren
    finally:
        procs[0].kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(procs[1].pid, signal.SIGKILL)  # the shell and its grandchild
        for proc in procs:
            proc.wait()


def test_prompt_file_is_written_only_when_something_reads_it(tmp_path: Path) -> None:
    # Given: an agent whose argv never names {prompt_file}, prompt passed as an argument
    common = {"agent_name": "mine", "card_id": "C1", "workdir": tmp_path, "attempt": 1, "prompt": "go",
              "resume_session_id": None}
    plain = AgentConfig(command=["true"], prompt="arg")
    # When
    argv, _ = build_command(plain, prompt_file=tmp_path / "a.md", **common)  # type: ignore[arg-type]
    build_command(plain, prompt_file=tmp_path / "kept.md", keep_prompt=True, **common)  # type: ignore[arg-type]
    build_command(AgentConfig(command=["cat"], prompt="file"), prompt_file=tmp_path / "f.md",
                  **common)  # type: ignore[arg-type]
    build_command(AgentConfig(command=["x"], prompt="stdin",
                              resume=["--msg", "{prompt_file}"]),
                  prompt_file=tmp_path / "r.md", **{**common, "resume_session_id": "s1"})  # type: ignore[arg-type]
    # Expect: nothing reads the first one, so it is not written; the others are
    assert argv == ["true", "go"]
    assert not (tmp_path / "a.md").exists()
    assert (tmp_path / "kept.md").read_text() == "go"
    assert (tmp_path / "f.md").read_text() == "go"
    assert (tmp_path / "r.md").read_text() == "go"
