"""`squad up`: the whole system on one machine, stopped cleanly on Ctrl-C / SIGTERM."""

from __future__ import annotations

import importlib.util
import os
import secrets
import sys
import time
from pathlib import Path

import redis
from rich.console import Console

from squad.actions.backlog import load_file, parse_backlog
from squad.agents.sandbox import fallback_warning
from squad.core.constants import CARDS_QUEUE, MAINTENANCE_QUEUE
from squad.core.masking import mask_url
from squad.core.settings import load_settings
from squad.live.celery_config import store_queue
from squad.live.celery_control import celery_workers
from squad.live.connections import redis_client
from squad.ops.embedded_redis import EmbeddedRedis
from squad.ops.ports import ensure_port_free
from squad.ops.supervisor import Child, Supervisor
from squad.ops.up_state import remove_state, write_state
from squad.ops.up_view import Probes, UpView, read_cards
from squad.store.card_store import CardStore

API_HOST = "127.0.0.1"
DEMO_DATABASE_URL = "sqlite:///.squad/demo.db"
DEMO_AGENT_DURATION_S = 1.5  # each demo card's agent run (the demo must end within 30 s)
DEMO_RETRY_BACKOFF_S = 1  # the demo's flaky card is retried after ~1 s, not a minute
DEMO_BACKLOG = Path(__file__).parent / "demo_backlog.json"


def _answers(url: str) -> bool:
    client = redis_client(url, socket_timeout=1, connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def load_demo(database_url: str) -> int:
    """(Re)load the demo backlog: its cards start from TODO every time."""
    store = CardStore(database_url)
    specs = parse_backlog(load_file(DEMO_BACKLOG))
    store.delete_cards([s.card_id for s in specs])
    added, _ = store.add_cards(specs)
    store.dispose()
    return len(added)


def run_up(*, demo: bool, port: int, concurrency: int) -> int:
    """Start Redis (if needed), worker, beat, orchestrator and API; show their progress; supervise
    until stopped."""
    started = time.monotonic()
    settings = load_settings()
    ensure_port_free(API_HOST, port)  # before anything starts: never advertise another process's URL
    env = dict(os.environ)
    console = Console(highlight=False)
    live = console.is_terminal
    logs_dir = Path(".squad") / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    embedded: EmbeddedRedis | None = None
    if _answers(settings.broker):
        redis_desc = f"at {mask_url(settings.redis_url)}"
    else:
        # A new random password each start, kept in the 0600 state file for the commands of this folder.
        embedded = EmbeddedRedis(Path(".squad") / "redis", password=secrets.token_urlsafe(32))
        embedded.start()
        env["SQUAD_REDIS_URL"] = embedded.url
        for key in ("SQUAD_BROKER_URL", "SQUAD_RESULT_BACKEND", "SQUAD_EVENTS_URL"):
            env.pop(key, None)
        redis_desc = (f"embedded redis-server at {mask_url(embedded.url)} (none answered at "
                      f"{mask_url(settings.redis_url)}; AOF in .squad/redis)")
    env.setdefault("SQUAD_REDIS_URL", settings.redis_url)
    env.setdefault("SQUAD_DATABASE_URL", settings.database_url)
    if demo:
        if "SQUAD_DATABASE_URL" not in os.environ:
            env["SQUAD_DATABASE_URL"] = DEMO_DATABASE_URL
        # The demo's own pace: short agent runs and a short retry backoff (unless set by the user).
        env.setdefault("SQUAD_DEMO_DURATION", str(DEMO_AGENT_DURATION_S))
        env.setdefault("SQUAD_RETRY_BACKOFF", str(DEMO_RETRY_BACKOFF_S))
        load_demo(env["SQUAD_DATABASE_URL"])
    env["USE_CELERY"] = "true"
    store = CardStore(env["SQUAD_DATABASE_URL"])
    # Its own queues: another store on the same Redis (another folder's, or `--demo` beside the
    # default store) never sees these cards, nor these workers its cards (docs/operations.md).
    for key, name, default in (("SQUAD_CARDS_QUEUE", "cards", CARDS_QUEUE),
                               ("SQUAD_MAINTENANCE_QUEUE", "maintenance", MAINTENANCE_QUEUE)):
        if key not in os.environ and getattr(settings, key.removeprefix("SQUAD_").lower()) == default:
            env[key] = store_queue(name, store.instance_id)
    py = [sys.executable, "-m", "squad"]
    specs = [
        ("worker", [*py, "worker", "--concurrency", str(concurrency), "--hostname", "squad-up@%h"]),
        ("beat", [*py, "beat", "--loglevel", "WARNING"]),
        ("orchestrator", [*py, "orchestrate", "--mode", "celery", "--interval", "1"]),
    ]
    api_url: str | None = None
    if importlib.util.find_spec("squad.api") is not None:
        specs.append(("api", [*py, "serve", "--port", str(port)]))
        api_url = f"http://{API_HOST}:{port}"
    log_files = [(logs_dir / f"{name}.log").open("ab") for name, _argv in specs]
    children = [Child(name, argv, env, stdout=out) for (name, argv), out in zip(specs, log_files, strict=True)]
    write_state(env, api_url=api_url)
    store_desc = mask_url(env["SQUAD_DATABASE_URL"])
    probe_settings = load_settings(redis_url=env["SQUAD_REDIS_URL"], database_url=env["SQUAD_DATABASE_URL"])
    probes = Probes(lambda: celery_workers(probe_settings), f"{api_url}/health" if api_url else None)
    sup = Supervisor(children)
    sup.install_signal_handlers()
    unconfined = fallback_warning(settings.sandbox)
    if unconfined is not None:  # said once here; the worker's own log says it too
        console.print(f"warning: {unconfined}", style="yellow", markup=False)
    view = UpView(console, live=live, api_url=api_url, redis_desc=redis_desc, store_desc=store_desc,
                  logs_dir=logs_dir, started=started)

    def tick() -> None:
        try:
            lines = read_cards(store, time.time())
        except Exception:  # the store briefly locked or down: show the last state
            return
        view.update(lines, api_ready=probes.api_ready, workers=probes.workers, children=_states(children))

    try:
        probes.start()
        with view:
            sup.run(on_tick=tick)
        # Stopped by a signal, as an interactive command is: 130 for Ctrl-C, 143 for SIGTERM.
        return 128 + sup.stopped_by if sup.stopped_by is not None else 0
    finally:
        probes.stop()
        remove_state()
        store.dispose()
        if embedded is not None:
            embedded.stop()
        for out in log_files:
            out.close()
        console.print("stopped")


def _states(children: list[Child]) -> dict[str, str]:
    """Each service as `running` or `restarting (exit N)`."""
    states: dict[str, str] = {}
    for child in children:
        proc = child.proc
        if proc is not None and proc.poll() is None:
            states[child.name] = "running" if not child.restarts else f"running (restarted {child.restarts}x)"
        else:
            code = proc.returncode if proc is not None else "?"
            states[child.name] = f"restarting (exit {code}, see .squad/logs/{child.name}.log)"
    return states
