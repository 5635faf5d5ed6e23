"""Ready-to-use supervisord and systemd configs (`squad deploy`), and the `squad init` template."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

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
# prompt_template = "prompt.md.j2"              # Jinja2, strict: card, attempt, last_error

default_agent = "claude"

[squads]                 # squad name -> agent name, used when a card names no agent
# backend = "claude"
# frontend = "codex"

[agents.claude]
command = ["claude", "-p", "--output-format", "stream-json", "--verbose"]
prompt = "stdin"                         # "stdin" | "arg" | "file" ({prompt_file})
parser = "claude-stream-json"            # "claude-stream-json" | "markers" | "plain"
resume = ["--resume", "{session_id}"]    # only on a retry whose last attempt had a session

[agents.codex]
command = ["codex", "exec", "--full-auto"]
prompt = "arg"
parser = "plain"

[agents.aider]
command = ["aider", "--yes-always", "--message-file", "{prompt_file}"]
prompt = "file"
parser = "plain"

# [agents.mine]
# command = ["python3", "my_agent.py", "{card_id}", "{prompt_file}"]
# env = { MY_FLAG = "1" }

# [hooks]                 # argv lists run in the card's working directory
# after_create = ["git", "init"]
# before_run = ["git", "pull", "--ff-only"]
# after_run = ["git", "status", "--short"]
'''


def _squad_bin() -> str:
    return shutil.which("squad") or f"{sys.executable} -m squad"


def supervisord(cwd: Path) -> str:
    """A supervisord program group: worker, beat, orchestrator, API (restarted when they exit)."""
    squad = _squad_bin()
    blocks = []
    for name, args in (("worker", "worker --concurrency 2"), ("beat", "beat"),
                       ("orchestrator", "orchestrate --mode celery"), ("api", "serve --port 3000")):
        blocks.append(f"""[program:squad-{name}]
command={squad} {args}
directory={cwd}
autostart=true
autorestart=true
startretries=1000
stopsignal=TERM
stopwaitsecs=60
killasgroup=true
stopasgroup=true
redirect_stderr=true
stdout_logfile=/var/log/squad/{name}.log
environment=SQUAD_REDIS_URL="redis://127.0.0.1:6379",SQUAD_DATABASE_URL="sqlite:///{cwd}/.squad/squad.db"
""")
    return "\n".join(blocks) + "\n[group:squad]\nprograms=squad-worker,squad-beat,squad-orchestrator,squad-api\n"


def systemd(cwd: Path) -> str:
    """systemd units (one file per unit, separated by comments)."""
    squad = _squad_bin()
    units = []
    for name, args in (("worker", "worker --concurrency 2"), ("beat", "beat"),
                       ("orchestrator", "orchestrate --mode celery"), ("api", "serve --port 3000")):
        units.append(f"""# /etc/systemd/system/squad-{name}.service
[Unit]
Description=Squad Orchestrator {name}
After=network-online.target redis-server.service postgresql.service
Wants=network-online.target

[Service]
WorkingDirectory={cwd}
ExecStart={squad} {args}
Restart=always
RestartSec=3
KillMode=mixed
KillSignal=SIGTERM
TimeoutStopSec=60
Environment=SQUAD_REDIS_URL=redis://127.0.0.1:6379
Environment=SQUAD_DATABASE_URL=sqlite:///{cwd}/.squad/squad.db
# Environment=SQUAD_API_TOKEN=change-me

[Install]
WantedBy=multi-user.target
""")
    return "\n".join(units)
