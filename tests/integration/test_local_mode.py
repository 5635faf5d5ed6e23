"""Local mode end to end: `squad orchestrate --mode local` as a real subprocess running fake agents
(tests/agents/) and the built-in demo agent, plus the rest of the CLI that needs no broker."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from squad.core.cards import CardSpec
from squad.core.retries import RetryPolicy
from squad.core.statuses import Status
from squad.store.card_store import CardStore
from support.cli import run_cli, squad_env
from support.fake_agents import sandbox_toml
from support.paths import AGENTS
from support.processes import free_port

PY = sys.executable
RATE_LIMIT_SESSION = "5b0e7d9a-1f3c-4a8e-b2d6-9c0f1e2a3b4c"
AGENTS_TOML = f"""
default_agent = "ok"
{sandbox_toml()}[agents.ok]
command = ["{PY}", "{AGENTS / 'markers.py'}"]
[agents.fail]
command = ["{PY}", "{AGENTS / 'fail.py'}"]
[agents.env]
command = ["{PY}", "{AGENTS / 'echo_env.py'}", "{{card_id}}", "{{attempt}}", "{{agent}}"]
env = {{ MY_FLAG = "on" }}
[agents.cat]
command = ["{PY}", "{AGENTS / 'cat.py'}"]
parser = "plain"
[agents.claude-like]
command = ["{PY}", "{AGENTS / 'resume_probe.py'}"]
parser = "claude-stream-json"
resume = ["--resume", "{{session_id}}"]
"""
ORCHESTRATE = ["orchestrate", "--mode", "local", "--once", "--wait", "--interval", "0.2"]


class Project:
    """A working directory with squad.toml, its own SQLite store, and an env without any broker."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db_url = f"sqlite:///{root / '.squad' / 'squad.db'}"
        self.toml = root / "squad.toml"
        self.toml.write_text(AGENTS_TOML, encoding="utf-8")
        # No broker, no event Redis (a port nobody listens on): pure local mode.
        self.env = squad_env(USE_CELERY="false", SQUAD_REDIS_URL=f"redis://127.0.0.1:{free_port()}",
                             SQUAD_DATABASE_URL=self.db_url, SQUAD_MAX_RETRIES="0", SQUAD_RETRY_BACKOFF="0.5",
                             SQUAD_DEMO_DURATION="0.3")
        self._store: CardStore | None = None

    @property
    def store(self) -> CardStore:
        if self._store is None:
            self._store = CardStore(self.db_url)
        return self._store

    def add_toml(self, text: str) -> None:
        self.toml.write_text(self.toml.read_text() + text, encoding="utf-8")

    def seed(self, *cards: dict[str, Any], spaced: bool = False) -> None:
        """Add cards in-process (one batch, or one at a time so their ages differ)."""
        specs = [CardSpec(**{"title": f"title of {c['card_id']}", **c}) for c in cards]
        if spaced:
            for s in specs:
                self.store.add_cards([s])
                time.sleep(0.01)
        else:
            self.store.add_cards(specs)

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env={**self.env, **env})

    def orchestrate(self, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.cli(*ORCHESTRATE, *extra, **env)

    def show(self, card_id: str) -> dict[str, Any]:
        proc = self.cli("card", "show", card_id, "--json")
        assert proc.returncode == 0, proc.stderr
        return dict(json.loads(proc.stdout))

    def status(self, card_id: str) -> Status:
        return self.store.get_card(card_id).status

    def close(self) -> None:
        if self._store is not None:
            self._store.dispose()


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    p = Project(tmp_path)
    yield p
    p.close()


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def started_order(store: CardStore, card_ids: list[str]) -> list[str]:
    firsts = {cid: store.list_runs(cid)[0].started_at for cid in card_ids}
    return sorted(card_ids, key=lambda cid: firsts[cid])  # type: ignore[arg-type, return-value]


# ---- scheduling ---------------------------------------------------------------------------------
def test_cards_run_most_urgent_first_then_oldest_and_exit_0_when_all_done(project: Project) -> None:
    # Given cards added one after another, ids chosen against the expected order
    project.seed({"card_id": "Z-old", "priority": 5}, {"card_id": "LOW", "priority": 0},
                 {"card_id": "A-new", "priority": 5}, {"card_id": "URGENT", "priority": 9}, spaced=True)
    # When one card at a time is allowed
    proc = project.orchestrate("--max-in-flight", "1")
    # Expect exit 0, every card DONE, started in priority-then-age order, never two at once
    assert proc.returncode == 0, proc.stderr
    ids = ["Z-old", "LOW", "A-new", "URGENT"]
    assert all(project.status(c) == Status.DONE for c in ids)
    assert started_order(project.store, ids) == ["URGENT", "Z-old", "A-new", "LOW"]
    runs = sorted((project.store.list_runs(c)[0] for c in ids), key=lambda r: r.started_at)  # type: ignore
    for before, after in itertools.pairwise(runs):
        assert before.ended_at is not None and after.started_at is not None
        assert before.ended_at <= after.started_at


def test_once_without_wait_runs_what_is_ready_and_leaves_dependants(project: Project) -> None:
    project.seed({"card_id": "A"}, {"card_id": "B", "depends_on": ["A"]})
    proc = project.cli("orchestrate", "--mode", "local", "--once")
    assert proc.returncode == 0, proc.stderr
    assert (project.status("A"), project.status("B")) == (Status.DONE, Status.TODO)


def test_dependants_run_after_their_dependency_is_done_and_are_blocked_by_a_failed_one(project: Project) -> None:
    # Given A <- B (ok agents) and F (failing agent) <- G <- H
    project.seed({"card_id": "A"}, {"card_id": "B", "depends_on": ["A"], "priority": 9},
                 {"card_id": "F", "agent": "fail"}, {"card_id": "G", "depends_on": ["F"]},
                 {"card_id": "H", "depends_on": ["G"]})
    # When
    proc = project.orchestrate()
    # Expect exit 1 (a card FAILED), B released only after A ended, G and H BLOCKED and never run
    assert proc.returncode == 1, proc.stderr
    assert [project.status(c) for c in "ABFGH"] == [Status.DONE, Status.DONE, Status.FAILED, Status.BLOCKED,
                                                  Status.BLOCKED]
    a_end = project.store.list_runs("A")[0].ended_at
    b_start = project.store.list_runs("B")[0].started_at
    assert a_end is not None and b_start is not None and a_end <= b_start
    assert project.store.list_runs("G") == [] and project.store.list_runs("H") == []
    # And `card show --json` carries the failed run with its exit code and error
    shown = project.show("F")
    assert shown["status"] == "FAILED" and shown["attempts"] == 1
    (run,) = shown["runs"]
    assert run["exit_code"] == 3 and run["status"] == "failed"
    assert "3" in run["error"] and shown["last_error"] == run["error"]
    assert {"card_id", "title", "status", "attempts", "progress", "current_step", "celery_task_id", "last_error",
            "created_at", "updated_at", "priority", "depends_on", "runs"} <= set(shown)
    assert {"attempt", "task_id", "worker", "started_at", "ended_at", "exit_code", "error", "cost_usd",
            "session_id", "num_turns", "input_tokens", "output_tokens"} <= set(run)


def test_a_settled_card_releases_its_dependant_at_once_not_at_the_next_poll(project: Project) -> None:
    # Given a chain A <- B <- C and an orchestrator whose safety-net poll never comes (an hour)
    project.seed({"card_id": "A"}, {"card_id": "B", "depends_on": ["A"]}, {"card_id": "C", "depends_on": ["B"]})
    # When
    proc = project.orchestrate("--interval", "3600")
    # Expect the whole chain DONE: each end woke the orchestrator (else this waits for an hour)
    assert proc.returncode == 0, proc.stderr
    assert [project.status(c) for c in "ABC"] == [Status.DONE] * 3


def test_a_failed_attempt_is_retrying_after_backoff_then_done_and_never_shown_failed(project: Project,
                                                                                    spawn: Any) -> None:
    # Given the built-in flaky demo agent (fails its first attempt), 2 retries, backoff 0.5 s
    project.seed({"card_id": "FLAKY", "agent": "demo-flaky"})
    env = {**project.env, "SQUAD_MAX_RETRIES": "2"}
    # When orchestrating, while watching the card's status
    proc = spawn(*ORCHESTRATE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[Status] = []
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        status = project.status("FLAKY")
        if not seen or seen[-1] != status:
            seen.append(status)
        time.sleep(0.03)
    _out, err = proc.communicate(timeout=60)
    # Expect RETRYING between the attempts, never FAILED, then DONE; exit 0
    assert proc.returncode == 0, err
    assert Status.RETRYING in seen and Status.FAILED not in seen, seen
    assert project.status("FLAKY") == Status.DONE
    first, second = project.store.list_runs("FLAKY")
    assert (first.attempt, first.status, first.exit_code) == (1, "failed", 1)
    assert (second.attempt, second.status, second.exit_code) == (2, "succeeded", 0)
    assert first.ended_at is not None and second.started_at is not None
    gap = (second.started_at - first.ended_at).total_seconds()
    assert gap >= 0.5, gap  # backoff * 2**0 (+ jitter)


# ---- what reaches the agent ---------------------------------------------------------------------
def test_the_agent_gets_squad_env_placeholders_its_own_env_and_its_workdir(project: Project, tmp_path: Path) -> None:
    project.seed({"card_id": "ENV-1", "agent": "env"})
    assert project.orchestrate().returncode == 0
    # When reading the archived log of attempt 1
    proc = project.cli("logs", "ENV-1", "--run", "1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("# attempt 1 (succeeded)")
    line = next(line for line in proc.stdout.splitlines() if "SQUAD_CARD_ID" in line)
    seen = json.loads(line[line.index("{"):])
    run = project.store.list_runs("ENV-1")[0]
    # Expect SQUAD_CARD_ID / SQUAD_ATTEMPT / SQUAD_TASK_ID, expanded argv, agent env, card workdir, a prompt
    assert (seen["SQUAD_CARD_ID"], seen["SQUAD_ATTEMPT"], seen["SQUAD_TASK_ID"]) == ("ENV-1", "1", run.task_id)
    assert seen["argv"] == ["ENV-1", "1", "env"]
    assert seen["MY_FLAG"] == "on"
    assert Path(seen["cwd"]) == (tmp_path / "work" / "ENV-1").resolve()
    assert seen["stdin_len"] > 0
    # And without --run (no live log in Redis) the latest archived attempt is shown
    latest = project.cli("logs", "ENV-1")
    assert latest.returncode == 0, latest.stderr
    assert latest.stdout == proc.stdout


def test_logs_of_an_attempt_that_does_not_exist_is_one_line_exit_2(project: Project) -> None:
    project.seed({"card_id": "A"})
    proc = project.cli("logs", "A", "--run", "3")
    assert proc.returncode == 2
    assert "no attempt 3" in one_error_line(proc)


def test_a_custom_prompt_template_is_rendered_into_the_agent_stdin(project: Project, tmp_path: Path) -> None:
    (tmp_path / "prompt.j2").write_text("Please do: {{ card.title }} (attempt {{ attempt }}, labels "
                                        "{{ card.labels | join(',') }})\n", encoding="utf-8")
    project.toml.write_text('prompt_template = "prompt.j2"\n' + project.toml.read_text(), encoding="utf-8")
    project.seed({"card_id": "P-1", "agent": "cat", "title": "Fix the bug", "labels": ["x", "y"]})
    assert project.orchestrate().returncode == 0
    _run, log = project.store.last_run_log("P-1") or (None, "")
    assert "Please do: Fix the bug (attempt 1, labels x,y)" in log


def test_a_prompt_template_with_an_unknown_variable_fails_the_attempt_with_a_clear_error(
        project: Project, tmp_path: Path) -> None:
    # Given a template using a variable that does not exist (and retries available)
    (tmp_path / "prompt.j2").write_text("Do {{ card.title }} for {{ customer }}\n", encoding="utf-8")
    project.toml.write_text('prompt_template = "prompt.j2"\n' + project.toml.read_text(), encoding="utf-8")
    project.seed({"card_id": "T-1", "agent": "env"})
    # When
    proc = project.orchestrate(SQUAD_MAX_RETRIES="2")
    # Expect the attempt failed naming the variable, no agent started, no pointless retry
    assert proc.returncode == 1, proc.stderr
    card = project.store.get_card("T-1")
    assert card.status == Status.FAILED
    assert "customer" in (card.last_error or "") and "undefined" in (card.last_error or "")
    (run,) = project.store.list_runs("T-1")
    assert run.error == card.last_error
    assert "starting agent" not in project.store.run_log(run.id)


def test_a_retry_resumes_the_session_the_failed_attempt_reported(project: Project) -> None:
    # Given a claude-like agent that hits a rate limit (is_error, exit 0) on attempt 1, then succeeds
    project.seed({"card_id": "R-1", "agent": "claude-like"})
    # When orchestrating with one retry
    proc = project.orchestrate(SQUAD_MAX_RETRIES="1")
    # Expect attempt 1 failed although it exited 0, with its session stored; attempt 2 resumed that session
    assert proc.returncode == 0, proc.stderr
    first, second = project.store.list_runs("R-1")
    assert (first.status, first.exit_code, first.session_id) == ("failed", 0, RATE_LIMIT_SESSION)
    assert "limit" in (first.error or "").lower()
    assert second.status == "succeeded"
    argv_lines = {r.attempt: next(line for line in project.store.run_log(r.id).splitlines() if "argv: " in line)
                  for r in (first, second)}
    assert json.loads(argv_lines[1].split("argv: ", 1)[1]) == []
    assert json.loads(argv_lines[2].split("argv: ", 1)[1]) == ["--resume", RATE_LIMIT_SESSION]


# ---- hooks --------------------------------------------------------------------------------------
def test_a_failing_before_run_hook_fails_the_attempt_without_starting_the_agent(project: Project) -> None:
    project.add_toml(f'[hooks]\nbefore_run = ["{PY}", "-c", "import sys; print(\'no\'); sys.exit(4)"]\n')
    project.seed({"card_id": "H-1"})
    proc = project.orchestrate()
    assert proc.returncode == 1, proc.stderr
    card = project.store.get_card("H-1")
    assert card.status == Status.FAILED
    assert card.last_error == "hook before_run exited with 4"
    log = project.store.run_log(project.store.list_runs("H-1")[0].id)
    assert "[before_run] no" in log and "starting agent" not in log


def test_a_failing_after_run_hook_is_logged_and_the_card_still_succeeds(project: Project, tmp_path: Path) -> None:
    project.add_toml(f'[hooks]\nafter_create = ["{PY}", "-c", "open(\'created\', \'w\').close()"]\n'
                     f'after_run = ["{PY}", "-c", "import sys; sys.exit(5)"]\n')
    project.seed({"card_id": "H-2"})
    assert project.orchestrate().returncode == 0
    assert project.status("H-2") == Status.DONE
    assert (tmp_path / "work" / "H-2" / "created").exists()
    assert "hook after_run exited with 5" in project.store.run_log(project.store.list_runs("H-2")[0].id)


# ---- user operations ----------------------------------------------------------------------------
def test_card_add_with_an_unknown_dependency_is_one_line_exit_2_and_adds_nothing(project: Project) -> None:
    proc = project.cli("card", "add", "--id", "C-1", "--title", "t", "--depends-on", "GHOST")
    assert proc.returncode == 2
    assert "GHOST" in one_error_line(proc)
    assert project.store.list_cards() == []


def test_card_add_then_list_shows_the_card_in_json(project: Project) -> None:
    assert project.cli("card", "add", "--id", "C-0", "--title", "first").returncode == 0
    proc = project.cli("card", "add", "--id", "C-1", "--title", "second", "--priority", "8", "--depends-on", "C-0",
                       "--squad", "backend", "--agent", "env")
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(project.cli("card", "list", "--json", "--squad", "backend").stdout)
    assert [(c["card_id"], c["priority"], c["depends_on"], c["agent"], c["status"]) for c in listed] == [
        ("C-1", 8, ["C-0"], "env", "TODO")]
    assert set(listed[0]) == set(CardSpec.model_fields) | {
        "status", "attempts", "progress", "current_step", "celery_task_id", "last_error", "created_at", "updated_at",
        "feedback", "landed_commit", "conflicts", "parent", "question", "choices"}


def test_card_list_shows_one_page_by_default_and_every_card_with_all(project: Project) -> None:
    # Given 130 cards, one with a control character in its title
    project.seed(*({"card_id": f"L{i:03d}", "title": f"card {i}"} for i in range(129)),
                 {"card_id": "ESC", "title": "bad \x1b[31mred", "priority": 9})
    # When
    page = project.cli("card", "list")
    rest = project.cli("card", "list", "--offset", "100")
    everything = project.cli("card", "list", "--all", "--json")
    # Expect a header and 100 rows, the most urgent first, with a hint on stderr; --all has them all
    assert page.returncode == 0, page.stderr
    lines = page.stdout.splitlines()
    assert lines[0].split()[:2] == ["card", "status"] and len(lines) == 101
    assert lines[1].startswith("ESC") and "\\x1b[31mred" in lines[1] and "\x1b" not in page.stdout
    assert "showing 1-100 of 130 cards" in page.stderr
    assert len(rest.stdout.splitlines()) == 31 and rest.stderr == ""
    assert len(json.loads(everything.stdout)) == 130


@pytest.mark.parametrize("args", [["card", "add", "--id", "bad id", "--title", "t"],
                                  ["card", "add", "--id", "C", "--title", "t", "--priority", "10"],
                                  ["card", "show", "NOPE"],
                                  ["card", "list", "--status", "SLEEPING"]])
def test_bad_card_input_is_one_line_exit_2(project: Project, args: list[str]) -> None:
    proc = project.cli(*args)
    assert proc.returncode == 2
    one_error_line(proc)


def test_cancelling_a_todo_card_keeps_it_from_running_and_blocks_its_dependants(project: Project) -> None:
    project.seed({"card_id": "A"}, {"card_id": "B", "depends_on": ["A"]}, {"card_id": "C"})
    proc = project.cli("cancel", "A")
    assert proc.returncode == 0, proc.stderr
    assert "A CANCELLED" in proc.stdout
    assert project.orchestrate().returncode == 0
    assert (project.status("A"), project.status("B"), project.status("C")) == (
        Status.CANCELLED, Status.BLOCKED, Status.DONE)
    assert project.store.list_runs("A") == []
    again = project.cli("cancel", "A")
    assert again.returncode == 2
    one_error_line(again)


def test_retrying_a_failed_card_then_orchestrating_again_makes_it_done(project: Project) -> None:
    # Given a card whose demo agent fails (SQUAD_DEMO_FAIL=1) and no retries
    project.seed({"card_id": "D-1", "agent": "demo"}, {"card_id": "D-2", "depends_on": ["D-1"]})
    assert project.orchestrate(SQUAD_DEMO_FAIL="1").returncode == 1
    assert (project.status("D-1"), project.status("D-2")) == (Status.FAILED, Status.BLOCKED)
    # When the user retries it and orchestrates again (the agent now succeeds)
    proc = project.cli("retry", "D-1")
    assert proc.returncode == 0, proc.stderr
    assert "queued again" in proc.stdout
    assert project.status("D-1") == Status.QUEUED
    assert project.orchestrate().returncode == 0
    # Expect a second attempt that succeeded, and the dependant released and done
    card = project.store.get_card("D-1")
    assert (card.status, card.attempts) == (Status.DONE, 2)
    assert [r.status for r in project.store.list_runs("D-1")] == ["failed", "succeeded"]
    assert project.status("D-2") == Status.DONE
    assert "SQUAD_DEMO.md" in {p.name for p in (Path(project.root) / "work" / "D-1").iterdir()}


def test_retry_of_a_card_that_never_ran_or_is_done_is_refused_with_exit_2(project: Project) -> None:
    project.seed({"card_id": "NEW"}, {"card_id": "OK"})
    project.store.enqueue("OK", "t-ok", expected=[Status.TODO])
    claim = project.store.claim("OK", "t-ok", "w", 30)
    assert claim is not None
    from squad.store.card_store import RunOutcome

    project.store.finish(claim, RunOutcome(succeeded=True), RetryPolicy.fixed(0))
    never = project.cli("retry", "NEW")
    assert never.returncode == 2 and "no task yet" in one_error_line(never)
    done = project.cli("retry", "OK")
    assert done.returncode == 2 and "DONE" in one_error_line(done) and "use --force" in one_error_line(done)


# ---- orchestrate usage errors -------------------------------------------------------------------
@pytest.mark.parametrize("args", [["--mode", "warp"], ["--max-in-flight", "0"], ["--interval", "fast"],
                                  ["--bogus"]])
def test_orchestrate_with_a_bad_flag_exits_2_with_one_line(project: Project, args: list[str]) -> None:
    proc = project.cli("orchestrate", *args)
    assert proc.returncode == 2
    one_error_line(proc)


def test_orchestrate_in_celery_mode_without_a_broker_is_one_line_exit_2(project: Project) -> None:
    proc = project.cli("orchestrate", "--mode", "celery", "--once")
    assert proc.returncode == 2
    assert "broker" in one_error_line(proc)


# ---- setup commands -----------------------------------------------------------------------------
def test_init_writes_a_squad_toml_that_loads_and_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    env = squad_env(USE_CELERY="false")
    first = run_cli("init", env=env)
    assert first.returncode == 0, first.stderr
    text = (tmp_path / "squad.toml").read_text()
    assert "[agents.claude]" in text and text.lstrip().startswith("#")
    second = run_cli("init", env=env)
    assert second.returncode == 2
    assert "already exists" in one_error_line(second)
    assert run_cli("init", "--force", env=env).returncode == 0
    checked = run_cli("agents", "check", "--json", env=env)
    assert checked.returncode == 0, checked.stderr
    assert {"claude", "codex", "aider"} <= {row["agent"] for row in json.loads(checked.stdout)}


@pytest.mark.parametrize(("target", "marks"), [("systemd", ["[Unit]", "[Service]", "ExecStart=", "Restart="]),
                                               ("supervisord", ["[program:", "command=", "autorestart"])])
def test_deploy_prints_a_ready_config(target: str, marks: list[str]) -> None:
    proc = run_cli("deploy", target)
    assert proc.returncode == 0, proc.stderr
    for mark in marks:
        assert mark in proc.stdout, mark
    for service in ("worker", "beat", "orchestrate", "serve"):
        assert service in proc.stdout


def test_deploy_to_an_unknown_target_is_one_line_exit_2() -> None:
    proc = run_cli("deploy", "kubernetes")
    assert proc.returncode == 2
    one_error_line(proc)


def test_agents_check_reports_installed_and_missing_agents_as_json(project: Project) -> None:
    project.add_toml('[agents.ghost]\ncommand = ["definitely-not-installed-agent"]\n')
    proc = project.cli("agents", "check", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {row["agent"]: row for row in json.loads(proc.stdout)}
    assert rows["ok"]["installed"] is True and rows["ok"]["runnable"] is True and rows["ok"]["default"] is True
    assert rows["ghost"]["installed"] is False and rows["ghost"]["runnable"] is False
    assert rows["demo"]["installed"] is True
    assert {"agent", "command", "installed", "runnable", "detail", "default"} <= set(rows["ghost"])


# ---- help ---------------------------------------------------------------------------------------
COMMANDS = [["up"], ["worker"], ["beat"], ["serve"], ["orchestrate"], ["backlog"], ["backlog", "import"],
            ["backlog", "export"], ["backlog", "validate"], ["card"], ["card", "add"], ["card", "list"],
            ["card", "show"], ["logs"], ["retry"], ["cancel"], ["status"], ["watch"], ["deploy"], ["init"],
            ["agents"], ["agents", "check"]]
HELP_SCRIPT = """
import contextlib, io, json, sys
from squad.cli.app import main
result = {}
for cmd in json.loads(sys.argv[1]):
    buf = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(buf):
        try:
            main([*cmd, "--help"])
        except SystemExit as exc:
            code = exc.code
    result[" ".join(cmd)] = [code, buf.getvalue()]
print(json.dumps(result))
"""


def test_squad_help_lists_every_command() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    for name in ("up", "worker", "beat", "serve", "orchestrate", "backlog", "card", "logs", "retry", "cancel",
                 "status", "watch", "deploy", "init", "agents"):
        assert f" {name} " in proc.stdout or f" {name}\n" in proc.stdout, name


def test_help_of_every_command_exits_0() -> None:
    proc = subprocess.run([PY, "-c", HELP_SCRIPT, json.dumps(COMMANDS)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for cmd, (code, text) in result.items():
        assert code == 0, (cmd, text)
        assert "Usage" in text, cmd
    assert "--max-in-flight" in result["orchestrate"][1] and "--depends-on" in result["card add"][1]
