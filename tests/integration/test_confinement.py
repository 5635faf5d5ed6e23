"""Confinement of cards and agents (docs/security.md): where an agent may run, what it may see,
how long it may take, and what hooks and prompt files leave behind. Real CLI and agent subprocesses
(local mode, no broker)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from squad.core.cards import CardSpec
from squad.core.statuses import Status
from squad.store.card_store import CardStore
from support.cli import run_cli, squad_env
from support.fake_agents import confined
from support.paths import AGENTS
from support.processes import free_port, host_pid, wait_for

PY = sys.executable
PROBE = str(AGENTS / "probe.py")
ORCHESTRATE = ["orchestrate", "--mode", "local", "--once", "--wait", "--interval", "0.2"]


class Project:
    """A directory with squad.toml and its own SQLite store; the env has no broker."""

    def __init__(self, root: Path, toml: str = "", **env: str) -> None:
        self.root = root
        self.work = root / "work"
        self.db_url = f"sqlite:///{root / '.squad' / 'squad.db'}"
        (root / "squad.toml").write_text(confined(toml, root), encoding="utf-8")
        self.env = squad_env(**{"USE_CELERY": "false", "SQUAD_REDIS_URL": f"redis://127.0.0.1:{free_port()}",
                                "SQUAD_DATABASE_URL": self.db_url, "SQUAD_MAX_RETRIES": "0", **env})
        self.store = CardStore(self.db_url)

    def seed(self, **card: Any) -> None:
        """Add a card straight into the store (as an older version or another tool could have)."""
        self.store.add_cards([CardSpec(**{"title": "t", **card})])

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env={**self.env, **env})

    def orchestrate(self) -> subprocess.CompletedProcess[str]:
        return self.cli(*ORCHESTRATE)


@pytest.fixture
def make_project(tmp_path: Path) -> Iterator[Any]:
    made: list[Project] = []

    def make(toml: str = "", **env: str) -> Project:
        made.append(Project(tmp_path, toml, **env))
        return made[-1]

    yield make
    for p in made:
        p.store.dispose()


def write_backlog(path: Path, cards: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"cards": cards}), encoding="utf-8")
    return path


# ---- item 1: workdir confinement ----------------------------------------------------------------
def test_import_rejects_every_workdir_outside_the_roots_naming_card_and_field(make_project: Any,
                                                                              tmp_path: Path) -> None:
    # Given a backlog with escapes next to allowed workdirs
    project = make_project()
    extra_root = tmp_path / "repos"
    extra_root.mkdir()
    backlog = write_backlog(tmp_path / "b.json", [
        {"card_id": "OK-REL", "title": "t", "workdir": "sub/dir"},
        {"card_id": "OK-ROOT", "title": "t", "workdir": str(extra_root / "project")},
        {"card_id": "DOTDOT", "title": "t", "workdir": "../../etc"},
        {"card_id": "TILDE", "title": "t", "workdir": "~/.ssh"},
        {"card_id": "ABS", "title": "t", "workdir": "/etc"},
        {"card_id": "SNEAKY", "title": "t", "workdir": str(extra_root / ".." / "elsewhere")},
    ])
    # When importing with one extra allowed root
    proc = project.cli("backlog", "import", str(backlog), SQUAD_ALLOWED_ROOTS=str(extra_root))
    # Expect exit 2, one line per escaping card naming the field, nothing imported
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 4, proc.stderr
    for card_id in ("DOTDOT", "TILDE", "ABS", "SNEAKY"):
        assert any(f"card {card_id}: workdir:" in line for line in lines), proc.stderr
    assert project.store.list_cards() == []
    # And the allowed ones alone import (relative to SQUAD_WORKDIR, or inside the extra root)
    good = write_backlog(tmp_path / "good.json", [
        {"card_id": "OK-REL", "title": "t", "workdir": "sub/dir"},
        {"card_id": "OK-ROOT", "title": "t", "workdir": str(extra_root / "project")}])
    proc = project.cli("backlog", "import", str(good), SQUAD_ALLOWED_ROOTS=str(extra_root))
    assert proc.returncode == 0, proc.stderr
    # And `card add --workdir` and `backlog validate` apply the same rule
    add = project.cli("card", "add", "--id", "X", "--title", "x", "--workdir", "/tmp")
    assert add.returncode == 2 and "card X: workdir:" in add.stderr, add.stderr
    assert project.cli("backlog", "validate", str(backlog)).returncode == 2


def test_a_workdir_swapped_for_a_symlink_fails_the_attempt_before_any_hook_or_agent(
        make_project: Any, tmp_path: Path) -> None:
    # Given a card whose (allowed) workdir was replaced by a link pointing outside the roots
    marker_hook, marker_agent = tmp_path / "hook-ran.json", tmp_path / "agent-ran.json"
    project = make_project(f"""
default_agent = "probe"
[agents.probe]
command = ["{PY}", "{PROBE}", "{marker_agent}"]
[hooks]
before_run = ["{PY}", "{PROBE}", "{marker_hook}"]
after_create = ["{PY}", "{PROBE}", "{marker_hook}"]
""")
    outside = tmp_path / "outside"
    outside.mkdir()
    project.work.mkdir(parents=True)
    (project.work / "inside").symlink_to(outside)
    project.seed(card_id="LINKED", workdir="inside")
    # When it runs
    proc = project.orchestrate()
    # Expect a failed attempt with a clear error, and neither hook nor agent started
    assert proc.returncode == 1, proc.stderr
    card = project.store.get_card("LINKED")
    assert card.status == Status.FAILED
    assert card.last_error is not None and "workdir refused" in card.last_error and "outside" in card.last_error
    assert not marker_hook.exists() and not marker_agent.exists()
    assert list(outside.iterdir()) == []


# ---- item 2: the agent's environment ------------------------------------------------------------
def test_agents_and_hooks_never_see_squad_secrets_and_env_deny_removes_more(make_project: Any,
                                                                            tmp_path: Path) -> None:
    # Given a worker environment full of secrets, and an agent that denies AWS_* and adds one variable
    seen_agent, seen_hook = tmp_path / "agent.json", tmp_path / "hook.json"
    password = "hunter2-redis-pw"
    project = make_project(f"""
default_agent = "probe"
[agents.probe]
command = ["{PY}", "{PROBE}", "{seen_agent}"]
env_deny = ["AWS_*"]
env = {{ ADDED_BY_AGENT = "yes" }}
[agents.probe.sandbox]
# unconfined: what an agent reads of its ancestors' /proc/<pid>/environ (in a sandbox it sees none)
kind = "none"
[hooks]
before_run = ["{PY}", "{PROBE}", "{seen_hook}"]
""", SQUAD_API_TOKEN="tok-very-secret-123",
        SQUAD_REDIS_URL=f"redis://:{password}@127.0.0.1:{free_port()}",
        SQUAD_EVENTS_URL=f"redis://:{password}@127.0.0.1:{free_port()}/2",
        COPY_OF_URL=f"prefix {password} suffix", SQUAD_SOMETHING_ELSE="x", AWS_SECRET_ACCESS_KEY="aws",
        ANTHROPIC_API_KEY="agent-own-key", CELERY_BROKER_URL=f"redis://:{password}@h/0")
    project.seed(card_id="ENV-1")
    # When the card runs
    proc = project.orchestrate()
    assert proc.returncode == 0, proc.stderr
    # Expect: no token, no store/Redis URL, nothing holding the password, no other SQUAD_*
    for path in (seen_agent, seen_hook):
        env = json.loads(path.read_text())["env"]
        blob = json.dumps(env)
        assert "tok-very-secret-123" not in blob and password not in blob
        assert project.db_url not in blob and ".squad/squad.db" not in blob
        # the agent also gets its attempt's channel back (docs/agents.md); hooks do not
        channel = {"SQUAD_MCP_DIR", "SQUAD_MCP_TOKEN"} if path == seen_agent else set()
        assert {k for k in env if k.startswith("SQUAD_")} == {
            "SQUAD_CARD_ID", "SQUAD_ATTEMPT", "SQUAD_TASK_ID", "SQUAD_WORKDIR"} | channel
        assert env["SQUAD_CARD_ID"] == "ENV-1" and env["SQUAD_ATTEMPT"] == "1"
        assert Path(env["SQUAD_WORKDIR"]) == (project.work / "ENV-1").resolve()
        assert "AWS_SECRET_ACCESS_KEY" not in env and "CELERY_BROKER_URL" not in env
        assert env["ANTHROPIC_API_KEY"] == "agent-own-key" and env["ADDED_BY_AGENT"] == "yes"
        assert env["PATH"] == os.environ["PATH"]
    # Expect (issue 21 item 3): nor from their ancestors, e.g. `tr '\\0' '\\n' </proc/$PPID/environ`
    ancestors = json.loads(seen_agent.read_text())["ancestors"]
    assert ancestors, "the agent found no parent"
    for ancestor in ancestors:
        assert "tok-very-secret-123" not in (ancestor["environ"] or ""), ancestor["cmdline"]
        assert password not in (ancestor["environ"] or ""), ancestor["cmdline"]


# ---- item 4: hooks ------------------------------------------------------------------------------
def test_a_hook_that_times_out_is_ended_with_its_whole_group_and_its_output_is_bounded(
        make_project: Any, tmp_path: Path) -> None:
    # Given a before_run hook that floods its output, starts a background child, then hangs
    pidfile = tmp_path / "bg.pid"
    script = (f"sleep 600 & echo $! > {pidfile}; head -c 20000000 /dev/zero | tr '\\\\0' 'x' | fold -w 100;"
              " sleep 600")
    project = make_project(f"""
default_agent = "probe"
[agents.probe]
command = ["{PY}", "{PROBE}", "{tmp_path / 'agent.json'}"]
[hooks]
before_run = ["sh", "-c", "{script}"]
timeout = 3
""")
    project.seed(card_id="HOOK-1")
    # When it runs
    started = time.monotonic()
    proc = project.orchestrate()
    # Expect the attempt failed on the hook's timeout, the background child is gone too
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - started < 120
    card = project.store.get_card("HOOK-1")
    assert card.last_error is not None and "hook before_run timed out" in card.last_error
    bg = host_pid(int(pidfile.read_text()), env={"SQUAD_CARD_ID": "HOOK-1"})  # the pid in its sandbox
    wait_for(lambda: not psutil.pid_exists(bg) or psutil.Process(bg).status() == psutil.STATUS_ZOMBIE, 20,
             message="background child of the hook ended")
    assert not (tmp_path / "agent.json").exists()
    # And only a bounded tail of the 20 MB reached the log
    _run, log = project.store.last_run_log("HOOK-1") or (None, "")
    assert len(log) < 200_000
    assert "earlier bytes not kept" in log


# ---- item 13: prompt files ----------------------------------------------------------------------
@pytest.mark.parametrize("keep", [False, True])
def test_prompt_files_are_private_per_card_and_removed_unless_kept_on_failure(make_project: Any, tmp_path: Path,
                                                                            keep: bool) -> None:
    # Given agents that report their prompt file's mode; one succeeds, one fails
    project = make_project(f"""
keep_prompts = {str(keep).lower()}
[agents.ok]
command = ["{PY}", "{PROBE}", "{tmp_path / 'ok.json'}", "{{prompt_file}}"]
prompt = "file"
[agents.bad]
command = ["{PY}", "{PROBE}", "{tmp_path / 'bad.json'}", "{{prompt_file}}", "3"]
prompt = "file"
""")
    project.seed(card_id="OK", agent="ok")
    project.seed(card_id="BAD", agent="bad")
    # When both run
    project.orchestrate()
    # Expect 0600 files in 0700 per-card folders
    for name, card_id in (("ok", "OK"), ("bad", "BAD")):
        seen = json.loads((tmp_path / f"{name}.json").read_text())
        assert seen["prompt_mode"] == "0o600" and seen["prompt_dir_mode"] == "0o700"
        assert Path(seen["prompt_file"]).parent.name == card_id
    ok_file = Path(json.loads((tmp_path / "ok.json").read_text())["prompt_file"])
    bad_file = Path(json.loads((tmp_path / "bad.json").read_text())["prompt_file"])
    # And removed after the attempt, except a failed one's with keep_prompts
    assert not ok_file.exists() and not ok_file.parent.exists()
    assert bad_file.exists() == keep


# ---- item 14: numbers from cards ----------------------------------------------------------------
def test_card_numbers_are_bounded_on_import(make_project: Any, tmp_path: Path) -> None:
    project = make_project(SQUAD_TIME_LIMIT="600", SQUAD_SOFT_TIME_LIMIT="500")
    backlog = tmp_path / "b.json"
    backlog.write_text('{"cards": ['
                       '{"card_id": "INF", "title": "t", "time_limit": 1e400},'
                       '{"card_id": "NAN", "title": "t", "soft_time_limit": NaN},'
                       '{"card_id": "HUGE", "title": "t", "time_limit": 601},'
                       '{"card_id": "PRIO", "title": "t", "priority": 10},'
                       '{"card_id": "RETRY", "title": "t", "max_retries": 1000},'
                       '{"card_id": "SOFT", "title": "t", "time_limit": 10, "soft_time_limit": 20},'
                       '{"card_id": "NEG", "title": "t", "priority": -1}]}', encoding="utf-8")
    proc = project.cli("backlog", "import", str(backlog))
    assert proc.returncode == 2, proc.stderr
    for card_id, field in (("INF", "time_limit"), ("NAN", "soft_time_limit"), ("HUGE", "time_limit"),
                           ("PRIO", "priority"), ("RETRY", "max_retries"), ("SOFT", "soft_time_limit"),
                           ("NEG", "priority")):
        assert any(line.startswith(f"squad: error: card {card_id}: ") and field in line
                   for line in proc.stderr.splitlines()), (card_id, proc.stderr)
    assert project.store.list_cards() == []


def test_a_stored_card_cannot_run_longer_than_the_global_hard_limit(make_project: Any, tmp_path: Path) -> None:
    # Given a card asking for an hour, stored directly, on an installation whose hard limit is 2 s
    project = make_project(f"""
default_agent = "hang"
[agents.hang]
command = ["{PY}", "{AGENTS / 'hang.py'}"]
""", SQUAD_TIME_LIMIT="2", SQUAD_SOFT_TIME_LIMIT="2")
    project.seed(card_id="LONG", time_limit=3600, soft_time_limit=3600)
    # When it runs
    proc = project.orchestrate()
    # Expect the installation's limit ended it
    assert proc.returncode == 1, proc.stderr
    error = project.store.get_card("LONG").last_error or ""
    assert "time limit exceeded (2s)" in error, error
