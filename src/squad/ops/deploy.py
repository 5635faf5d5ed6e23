"""Deploy configs that run as generated (`squad deploy supervisord|systemd`), and the `squad init` template.

Both targets carry the *current* settings (environment and squad.toml) into the services' environment,
so what `squad status` sees here is what the services get. The files hold URLs with passwords and the
API token: they are written with mode 0600.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from squad.agents.presets import agents_toml
from squad.core.errors import ConfigError
from squad.core.safetext import escape_controls
from squad.core.settings import Settings, config_path

SQUAD_TOML = '''# squad.toml: Squad Orchestrator configuration (precedence: CLI flag > env > this file > default)

# Infrastructure (env: SQUAD_REDIS_URL, SQUAD_DATABASE_URL, ...)
# redis_url = "redis://127.0.0.1:6379"          # DB 0 broker, DB 1 results, DB 2 events + logs
# database_url = "sqlite:///.squad/squad.db"    # postgresql+psycopg://user:pw@host/db for several machines
# use_celery = true                             # false forces local mode
# soft_time_limit = 1700                        # seconds per run (cards may override)
# time_limit = 1800
# max_retries = 3
# retry_backoff = 60                            # delay before retry n is backoff * 2**n (+ jitter, capped)
# stall_timeout = 900                           # an agent silent this long is ended (0 = off)
# budget_usd = 10.0                             # per card: no retry once its runs cost this much
# workdir = ".squad/work"
# prompt_template = "prompt.md.j2"              # Jinja2, strict: card, attempt, last_error, feedback, previous_runs
# Security (docs/security.md)
# allowed_roots = ["/srv/repos"]                # where a card's workdir may lie besides workdir
# allowed_hosts = ["squad.internal"]            # Host names the API answers besides loopback
# keep_prompts = false                          # keep the prompt file of a failed attempt (0600)
# task_events = false                           # Celery task events from the start (Flower enables them itself)

default_agent = "claude"

[squads]                 # squad name -> agent name, used when a card names no agent
# backend = "claude"
# frontend = "codex"

''' + agents_toml() + '''
# [agents.mine]
# command = ["python3", "my_agent.py", "{card_id}", "{prompt_file}"]
# env = { MY_FLAG = "1" }                 # added to the (scrubbed) environment
# env_deny = ["AWS_*", "GITHUB_TOKEN"]    # variables this agent must not receive
# Any agent can talk back to squad (progress, notes, sub-cards, questions to a person): start
# `squad mcp` as one of its MCP servers (stdio), as the claude preset does with
#   "--mcp-config", '{"mcpServers": {"squad": {"command": "squad", "args": ["mcp"]}}}'
# and codex with "-c", 'mcp_servers.squad.command="squad"', "-c", 'mcp_servers.squad.args=["mcp"]'
# (docs/agents.md). Its limits:
# ask_timeout = 3600      # seconds an attempt may wait for people's answers in all ("no answer" then)
# subcard_depth = 3       # how deep sub-cards may nest
# subcard_limit = 200     # sub-cards one card may create in all

# [hooks]                 # argv lists run in the card's working directory
# after_create = ["git", "init"]
# before_run = ["git", "pull", "--ff-only"]
# after_run = ["git", "status", "--short"]

# [workspace]             # each card in its own git worktree (docs/workspaces.md)
# repo = "/path/to/repo"  # must lie inside SQUAD_ALLOWED_ROOTS
# base = "main"           # default: the repository's HEAD
# branch_prefix = "squad/"
# keep = "on_failure"     # on_failure | always | never: what happens to a failed card's worktree
# review = false          # true: a successful card waits in REVIEW for `squad review approve|reject`
# auto_commit = true      # commit what the agent left, "squad: <card_id> attempt <n>"
# ttl_days = 7            # `squad workspace gc` removes worktrees idle longer than this
# after_approve = ["git", "push", "origin", "{branch}"]
'''


PROGRAMS = ("worker", "beat", "orchestrator", "api")
# A stopped worker finishes its running cards (warm shutdown): every stop timeout is above the
# hard time limit, with margins so the inner supervisor's own kill comes before the outer one's.
WORKER_STOP_MARGIN_S = 30
SERVICE_STOP_MARGIN_S = 60
LOG_MAX_BYTES = "50MB"
LOG_BACKUPS = 10
# Tables of squad.toml (agents, squads, hooks, routes, ...) are not single environment values:
# the services read them from squad.toml itself (SQUAD_CONFIG).
_ALWAYS_ENV = frozenset({"redis_url", "database_url", "workdir"})


@dataclass(frozen=True)
class Program:
    """One long-running process of a deployment."""

    name: str
    args: list[str]

    @property
    def service(self) -> str:
        """The program's name in supervisord and systemd."""
        return f"squad-{self.name}"


def programs(settings: Settings, *, concurrency: int, api_port: int, api_host: str = "127.0.0.1",
             only: Iterable[str] = PROGRAMS) -> list[Program]:
    """The processes of one machine: worker, beat (one per install), orchestrator (one), API."""
    wanted = set(only)
    unknown = wanted - set(PROGRAMS)
    if unknown or not wanted:
        raise ConfigError(f"--programs must name some of {', '.join(PROGRAMS)}, got {', '.join(sorted(unknown))}")
    stop_s = int(settings.time_limit) + WORKER_STOP_MARGIN_S
    table = {
        "worker": ["worker", "--concurrency", str(concurrency), "--hostname", "squad-worker@%h",
                   "--stop-timeout", str(stop_s)],
        "beat": ["beat"],
        "orchestrator": ["orchestrate", "--mode", "celery"],
        "api": ["serve", "--host", api_host, "--port", str(api_port)],
    }
    return [Program(name, table[name]) for name in PROGRAMS if name in wanted]


def stop_wait_s(settings: Settings) -> int:
    """How long a service manager waits for a stopping service before killing it."""
    return int(settings.time_limit) + SERVICE_STOP_MARGIN_S


def _env_name(field: str) -> str:
    return "USE_CELERY" if field == "use_celery" else f"SQUAD_{field.upper()}"


def _env_value(field: str, value: Any, cwd: Path) -> str:
    if isinstance(value, Path):
        return str(value if value.is_absolute() else cwd / value)
    if field == "database_url" and value.startswith("sqlite:///") and not value.startswith("sqlite:////"):
        rel = value.removeprefix("sqlite:///")
        return f"sqlite:///{cwd / rel}" if rel and rel != ":memory:" else value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return json.dumps(value, default=str)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def service_env(settings: Settings, cwd: Path) -> dict[str, str]:
    """The environment that gives a service exactly these settings, paths made absolute.

    Scalar settings go in as variables (those left at their default are omitted, except the
    infrastructure ones an operator looks for); agents, squads, hooks and routes stay in squad.toml,
    named by an absolute SQUAD_CONFIG. PATH is kept so agents installed for this user are found.
    """
    env: dict[str, str] = {}
    for field, info in Settings.model_fields.items():
        value = getattr(settings, field)
        if isinstance(value, dict | BaseModel):
            continue
        if value is None or (value == info.get_default(call_default_factory=True) and field not in _ALWAYS_ENV):
            continue
        env[_env_name(field)] = _env_value(field, value, cwd)
    config = config_path()
    if config.is_file():
        env["SQUAD_CONFIG"] = str(config if config.is_absolute() else cwd / config)
    env["PATH"] = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    return env


def _squad_argv() -> list[str]:
    """This interpreter runs the services: the same install (virtualenv) as the command that wrote them."""
    return [sys.executable, "-m", "squad"]


# ---- what may go into a config file --------------------------------------------------------------
def _refuse_controls(values: dict[str, object]) -> None:
    """Refuse a path, user name, argument or setting holding a control character: a newline in a
    folder's name would end its line and start another (`[program:…]`, `ExecStartPre=`)."""
    for what, value in values.items():
        text = str(value)
        if escape_controls(text) != text:
            raise ConfigError(f"{what} {escape_controls(text)!r} holds a control character: refusing to write a "
                              "config from it (rename it, or run squad deploy from another folder)")


def _refuse_in_config(settings_env: dict[str, str], cwd: Path, argv: list[str], **paths: object) -> None:
    _refuse_controls({"working directory": cwd, "interpreter": " ".join(argv), **paths,
                      **{f"setting {k}": v for k, v in settings_env.items()}})


# ---- supervisord ------------------------------------------------------------------------------
def _sv(value: str) -> str:
    """Escape for supervisord, which %-interpolates every value."""
    return value.replace("%", "%%")


def _sv_env(env: dict[str, str]) -> str:
    """supervisord's `environment=` value: KEY="value" pairs, quotes and backslashes escaped."""
    return ",".join(f'{k}="{_sv(_quote_inner(v))}"' for k, v in env.items())


def _quote_inner(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def supervisord(settings: Settings, cwd: Path, *, run_dir: Path, log_dir: Path, concurrency: int = 2,
                api_port: int = 3000, only: Iterable[str] = PROGRAMS) -> str:
    """A complete supervisord config (`supervisord -c FILE` runs it as is): server, control socket,
    one program per process in group `squad`, restarted on exit, logs rotated."""
    run_dir, log_dir = (d if d.is_absolute() else cwd / d for d in (run_dir, log_dir))
    variables = service_env(settings, cwd)
    _refuse_in_config(variables, cwd, _squad_argv(), **{"--run-dir": run_dir, "--log-dir": log_dir})
    env = _sv_env(variables)
    squad = " ".join(_squad_argv())
    progs = programs(settings, concurrency=concurrency, api_port=api_port, only=only)
    parts = [f"""; Generated by `squad deploy supervisord` in {cwd}.
; It holds the settings' URLs and token: keep it private (mode 0600).
; Start: supervisord -c THIS_FILE    Control: supervisorctl -c THIS_FILE status|restart squad:*|shutdown

[unix_http_server]
file={_sv(str(run_dir / "supervisor.sock"))}
chmod=0700

[supervisord]
pidfile={_sv(str(run_dir / "supervisord.pid"))}
logfile={_sv(str(log_dir / "supervisord.log"))}
logfile_maxbytes={LOG_MAX_BYTES}
logfile_backups={LOG_BACKUPS}
childlogdir={_sv(str(log_dir))}
directory={_sv(str(cwd))}
environment={env}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{_sv(str(run_dir / "supervisor.sock"))}
"""]
    for prog in progs:
        parts.append(f"""[program:{prog.service}]
command={_sv(squad + " " + " ".join(prog.args))}
directory={_sv(str(cwd))}
autostart=true
autorestart=true
startsecs=3
startretries=100
stopsignal=TERM
stopwaitsecs={stop_wait_s(settings)}
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile={_sv(str(log_dir / f"{prog.service}.log"))}
stdout_logfile_maxbytes={LOG_MAX_BYTES}
stdout_logfile_backups={LOG_BACKUPS}
""")
    parts.append(f"[group:squad]\nprograms={','.join(p.service for p in progs)}\n")
    return "\n".join(parts)


# ---- systemd ----------------------------------------------------------------------------------
ENV_FILE = "squad.env"


def _systemd_env_line(key: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'{key}="{escaped}"'


def _systemd_arg(arg: str) -> str:
    """Escape for ExecStart: systemd expands % specifiers and $VARIABLES, splits on spaces and reads
    C escapes inside quotes."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if any(c.isspace() or c in "\"'\\;" for c in arg):
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def _systemd_value(what: str, value: str) -> str:
    """A path or user name as a unit's value: `%` doubled (systemd expands specifiers there too); a
    backslash refused (a trailing one would continue the line)."""
    if "\\" in value:
        raise ConfigError(f"{what} {escape_controls(value)!r} holds a backslash, which systemd reads as an escape: "
                          "refusing to write units from it")
    return value.replace("%", "%%")


def systemd(settings: Settings, cwd: Path, *, env_file: Path, concurrency: int = 2, api_port: int = 3000,
            user: str | None = None, only: Iterable[str] = PROGRAMS) -> dict[str, str]:
    """Unit files (one per program) and their EnvironmentFile, by file name."""
    user = user or getpass.getuser()
    files: dict[str, str] = {}
    env = service_env(settings, cwd)
    _refuse_in_config(env, cwd, _squad_argv(), **{"--user": user, "environment file": env_file})
    unit_cwd, unit_env_file = _systemd_value("working directory", str(cwd)), _systemd_value("--output", str(env_file))
    unit_user = _systemd_value("--user", user)
    files[ENV_FILE] = ("# Generated by `squad deploy systemd`: the services' settings. Keep it 0600.\n"
                       + "".join(_systemd_env_line(k, v) + "\n" for k, v in env.items()))
    for prog in programs(settings, concurrency=concurrency, api_port=api_port, only=only):
        exec_start = " ".join(_systemd_arg(a) for a in [*_squad_argv(), *prog.args])
        files[f"{prog.service}.service"] = f"""# Generated by `squad deploy systemd` in {cwd}.
[Unit]
Description=Squad Orchestrator {prog.name}
Wants=network-online.target
After=network-online.target redis-server.service postgresql.service

[Service]
Type=simple
User={unit_user}
WorkingDirectory={unit_cwd}
EnvironmentFile={unit_env_file}
ExecStart={exec_start}
Restart=always
RestartSec=3
KillMode=mixed
KillSignal=SIGTERM
TimeoutStopSec={stop_wait_s(settings)}

[Install]
WantedBy=multi-user.target
"""
    return files


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds passwords), also when it already exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
