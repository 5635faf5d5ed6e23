"""What a short `squad` command imports: `--help` and `version` stay light, and the CLI's logging
set-up imports structlog only when something logs (docs/benchmarks.md, "CLI": the timings are
measured by bench/cli.py, not here)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from squad.cli.app import app

#: Libraries that cost a short command more than the interpreter's own start-up.
HEAVY = ("pydantic", "pydantic_settings", "sqlalchemy", "structlog", "rich", "redis", "celery", "kombu",
         "yaml", "jinja2", "psutil", "fastapi", "alembic")

# Runs one `squad` command in a fresh interpreter, then reports what it imported on stderr.
PROBE = """
import json, sys
from squad.entry import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
sys.stderr.write(json.dumps({"code": code, "modules": sorted(m for m in sys.modules if "." not in m)}))
"""


def probe(*args: str, cwd: Path | None = None) -> tuple[int, str, set[str]]:
    # (in a project folder, with squad's settings from its squad.toml only)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUAD_")} if cwd else None
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60,
                          check=False, cwd=cwd, env=env)
    report = json.loads(proc.stderr.splitlines()[-1])
    return report["code"], proc.stdout, set(report["modules"])


def test_help_lists_every_command_without_importing_heavy_libraries() -> None:
    # When
    code, out, modules = probe("--help")
    # Expect the whole help, and none of the libraries a command imports when it runs
    names = [c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands]
    names += [g.name or "" for g in app.registered_groups]
    assert code == 0 and len(names) > 10
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ") and line.strip()}
    assert set(names) <= listed, set(names) - listed
    # (click: Typer vendors its own copy; the real one would be imported for its exception classes only)
    assert not modules & {"click", *HEAVY}, modules & {"click", *HEAVY}


def test_version_answers_without_the_typer_app() -> None:
    for args, text in ((["version"], "0.1.0\n"), (["--version"], "squad 0.1.0\n")):
        code, out, modules = probe(*args)
        assert (code, out) == (0, text)
        assert not modules & {"typer", "click", *HEAVY}, modules & {"typer", "click", *HEAVY}
    # `squad version --help` is still the Typer command's help
    code, out, _ = probe("version", "--help")
    assert code == 0 and "Usage: squad version" in out and "Print the version." in out


def test_card_list_imports_alembic_only_to_migrate(tmp_path: Path) -> None:
    # Given a project folder made by `squad init`, whose store does not exist yet
    assert probe("init", cwd=tmp_path)[0] == 0
    db = tmp_path / ".squad" / "squad.db"
    assert not db.exists()
    # When `card list` runs twice
    first = probe("card", "list", cwd=tmp_path)
    second = probe("card", "list", cwd=tmp_path)
    # Expect the first to create the store through the migrations, the second to find it up to date
    # (one read of its revision) without importing Alembic; both print the same empty table
    assert db.exists()
    assert first[:2] == second[:2] == (0, "card  status  p  squad  agent  progress  step  title\n")
    assert "alembic" in first[2] and "alembic" not in second[2]


LOGS = """
import logging, sys
from squad.core.logconfig import configure_logging
configure_logging(logging.INFO, json_lines=True, lazy=True)
print("structlog" in sys.modules)
logging.getLogger("squad.std").warning("from the stdlib")
print("structlog" in sys.modules)
import structlog
structlog.get_logger("squad.sl").warning("from structlog", card_id="C1")
"""


def test_lazy_cli_logging_imports_structlog_only_to_log_and_logs_the_same_json_lines() -> None:
    # When a command configures logging lazily, then logs through the stdlib and through structlog
    proc = subprocess.run([sys.executable, "-c", LOGS], capture_output=True, text=True, timeout=60, check=True)
    # Expect structlog imported by the first record only, and both records as JSON lines on stderr
    assert proc.stdout.split() == ["False", "True"]
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    assert [(x["logger"], x["event"], x["level"]) for x in lines] == [
        ("squad.std", "from the stdlib", "warning"), ("squad.sl", "from structlog", "warning")]
    assert lines[1]["card_id"] == "C1" and all("timestamp" in x for x in lines)


def test_structlog_imported_first_is_configured_before_its_first_line() -> None:
    # When the first thing to import structlog is a module using its logger (no stdlib record before)
    script = LOGS.replace('logging.getLogger("squad.std").warning("from the stdlib")\n', "")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    # Expect the line rendered by our configuration (JSON on stderr), not structlog's default (stdout)
    assert proc.stdout.split() == ["False", "False"]
    assert json.loads(proc.stderr)["event"] == "from structlog"


def test_status_reads_an_up_to_date_sqlite_store_without_sqlalchemy_and_a_dead_redis_without_redis_py(
        tmp_path: Path) -> None:
    # Given a project whose Redis URL names a port nobody listens on, and no store yet
    from support.processes import free_port

    (tmp_path / "squad.toml").write_text(f'redis_url = "redis://127.0.0.1:{free_port()}"\n')
    # When `squad status --json` runs: first on no store, then on the store it made, then with a card
    first = probe("status", "--json", cwd=tmp_path)
    second = probe("status", "--json", cwd=tmp_path)
    assert probe("card", "add", "--id", "S-1", "--title", "one", cwd=tmp_path)[0] == 0
    third = probe("status", "--json", cwd=tmp_path)
    # Expect the first to create the store through SQLAlchemy and its migrations, as any command does
    assert first[0] == 0 and {"sqlalchemy", "alembic"} <= first[2]
    # ... and the next ones to read it with sqlite3 alone and to find Redis down without a Redis client,
    # reporting the same as before: every status counted, Redis not available, local mode
    for code, _out, modules in (second, third):
        assert code == 0 and not modules & {"sqlalchemy", "alembic", "redis", "celery", "kombu", "structlog"}
    reports = [json.loads(out) for _code, out, _modules in (first, second, third)]
    assert reports[0] == reports[1]
    assert reports[2]["cards"] == {**reports[1]["cards"], "TODO": 1}
    assert (reports[2]["database"], reports[2]["redis"], reports[2]["celery"], reports[2]["execution_mode"]) == (
        "connected", "not_available", "not_available", "local")


def test_status_reads_a_live_redis_without_redis_py_and_reports_what_the_full_client_reports(
        tmp_path: Path, redis_url: str) -> None:
    # Given a project on a live Redis with no worker: two messages waiting in the cards queue (one at
    # a priority of its own), a live orchestrator of this store and the id of one that expired
    import redis

    from squad.core.namespace import RedisKeys
    from squad.live.presence import OrchestratorPresence
    from squad.store.peek import peek

    (tmp_path / "squad.toml").write_text(f'redis_url = "{redis_url}"\n')
    assert probe("card", "add", "--id", "S-1", "--title", "one", cwd=tmp_path)[0] == 0
    seen = peek(f"sqlite:///{tmp_path / '.squad' / 'squad.db'}")
    assert seen is not None
    keys = RedisKeys.for_instance(seen.instance_id)
    broker = redis.Redis.from_url(f"{redis_url}/0")
    broker.lpush("cards", "m1")
    broker.lpush("cards:3", "m2")
    events = redis.Redis.from_url(f"{redis_url}/2", decode_responses=True)
    presence = OrchestratorPresence(f"{redis_url}/2", keys, session="s1", mode="celery").start()
    try:
        events.sadd(keys.orchestrators, "gone-id")
        # When `squad status --json` runs, then again with a URL option only redis-py understands
        light = probe("status", "--json", cwd=tmp_path)
        (tmp_path / "squad.toml").write_text(f'redis_url = "{redis_url}?socket_keepalive=true"\n')
        full = probe("status", "--json", cwd=tmp_path)
    finally:
        presence.stop()
    # Expect the first to talk to Redis without redis-py or Celery, the second through redis-py
    assert light[0] == 0 and not light[2] & {"redis", "celery", "kombu", "sqlalchemy", "structlog"}
    assert full[0] == 0 and "redis" in full[2]
    # ... and both to report the same: Redis connected, its memory, 2 waiting, no worker, the live
    # orchestrator and its mode (the expired id removed from the set)
    reports = [json.loads(out) for _code, out, _modules in (light, full)]
    memory = [report.pop("redis_memory") for report in reports]  # (the Redis's own use moves between the two)
    for report in reports:
        report.pop("broker_url")
    assert reports[0] == reports[1]
    assert (reports[0]["redis"], reports[0]["queue_depth"], reports[0]["celery"], reports[0]["execution_mode"]) == (
        "connected", 2, "no_workers", "celery")
    assert all(re.fullmatch(r"[0-9.]+ MiB used of [0-9.]+ MiB \(noeviction\)", line) for line in memory), memory
    assert reports[0]["orchestrators"] == [presence.info.describe()]
    assert events.smembers(keys.orchestrators) == set()


# Runs the Typer app's `status` command itself (the entry point answers `status` without it).
THROUGH_TYPER = PROBE.replace("from squad.entry import main", "from squad.cli.app import main")


def test_status_is_answered_without_typer_and_prints_what_the_typer_command_prints(tmp_path: Path) -> None:
    # Given a project with a card, whose Redis URL names a port nobody listens on
    from support.processes import free_port

    (tmp_path / "squad.toml").write_text(f'redis_url = "redis://127.0.0.1:{free_port()}"\n')
    assert probe("card", "add", "--id", "S-1", "--title", "one", cwd=tmp_path)[0] == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUAD_") and k not in ("FORCE_COLOR", "TERM")}
    for args in (["status"], ["status", "--json"]):
        # When the entry point answers it, and when the Typer command does
        quick = probe(*args, cwd=tmp_path)
        typer_run = subprocess.run([sys.executable, "-c", THROUGH_TYPER, *args], capture_output=True, text=True,
                                   timeout=60, check=False, cwd=tmp_path, env=env)
        # Expect the same output and code, the first without Typer, Click, Rich or pydantic's option coercion
        assert (quick[0], quick[1]) == (0, typer_run.stdout), (quick[1], typer_run.stdout)
        assert not quick[2] & {"typer", "click", "rich", "sqlalchemy", "structlog"}, quick[2]
    assert "cards: TODO 1\n" in quick_text(tmp_path)


def quick_text(cwd: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SQUAD_") and k not in ("FORCE_COLOR", "TERM")}
    proc = subprocess.run([sys.executable, "-m", "squad", "status"], capture_output=True, text=True, timeout=60,
                          check=True, cwd=cwd, env={**clean, **env})
    return proc.stdout


def test_status_keys_are_bold_where_rich_would_make_them_bold(tmp_path: Path) -> None:
    # Given a project (no store yet: the first status creates it)
    from support.processes import free_port

    (tmp_path / "squad.toml").write_text(f'redis_url = "redis://127.0.0.1:{free_port()}"\n')
    # When status prints to a pipe, with FORCE_COLOR, and with FORCE_COLOR on a dumb terminal
    plain, forced, dumb = (quick_text(tmp_path), quick_text(tmp_path, FORCE_COLOR="1"),
                           quick_text(tmp_path, FORCE_COLOR="1", TERM="dumb"))
    # Expect plain keys, bold keys (as Rich styles them) and plain keys again
    assert plain.startswith("version: 0.1.0\n") and "\x1b" not in plain
    assert forced.startswith("\x1b[1mversion\x1b[0m: 0.1.0\n")
    assert forced.replace("\x1b[1m", "").replace("\x1b[0m", "") == plain == dumb


def test_status_with_a_bad_setting_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    # Given a project whose squad.toml holds a setting of the wrong type
    (tmp_path / "squad.toml").write_text('max_retries = "many"\n')
    # When status runs (answered without Typer) and `status --help` (through Typer)
    code, out, _ = probe("status", cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUAD_")}
    proc = subprocess.run([sys.executable, "-m", "squad", "status"], capture_output=True, text=True, timeout=60,
                          check=False, cwd=tmp_path, env=env)
    helped = probe("status", "--help", cwd=tmp_path)
    # Expect exit 2 and one line naming the setting, no traceback; the help still the Typer command's
    assert (code, out) == (2, "") and proc.returncode == 2
    assert proc.stderr.startswith("squad: error: invalid setting") and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "max_retries" in proc.stderr.lower()
    assert helped[0] == 0 and "Usage: squad status" in helped[1]


# Ctrl-C at the moment `squad` imports the module named by argv[1], then the command in argv[2:].
# With MASKED set, the interrupt surfaces as another error raised while it was handled, as CPython's
# import machinery can turn it into `TypeError: expected a message argument`.
INTERRUPTED = """
import os, sys
class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == sys.argv[1]:
            if not os.environ.get("MASKED"):
                raise KeyboardInterrupt
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise TypeError("expected a message argument")
        return None
sys.meta_path.insert(0, CtrlC())
from squad.entry import main
main(sys.argv[2:])
"""


def test_ctrl_c_while_a_command_starts_is_exit_130_without_a_traceback(tmp_path: Path) -> None:
    # When Ctrl-C arrives while `squad` imports: the Typer app, the logging set-up of a command answered
    # without Typer, and that command's settings
    # ... also when the interrupt surfaces as another error raised while handling it
    for module, args, masked in (("squad.cli.app", ["card", "list"], ""), ("squad.core.logconfig", ["status"], ""),
                                 ("squad.core.settings", ["status"], ""), ("squad.core.settings", ["status"], "1"),
                                 ("squad.cli.cards", ["card", "list"], "1")):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SQUAD_")} | {"MASKED": masked}
        proc = subprocess.run([sys.executable, "-c", INTERRUPTED, module, *args], capture_output=True, text=True,
                              timeout=60, check=False, cwd=tmp_path, env=env)
        # Expect exit 130 (as Ctrl-C during the command), nothing on stdout, and never a traceback
        assert (proc.returncode, proc.stdout) == (130, ""), (module, masked, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, (module, proc.stderr)
