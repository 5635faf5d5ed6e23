"""`squad up`: the whole system on one machine, stopped cleanly on Ctrl-C / SIGTERM."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import redis
from rich.console import Console

from squad.backlog import load_file, parse_backlog
from squad.config import load_settings, mask_url
from squad.embedded import EmbeddedRedis
from squad.listen import ensure_port_free
from squad.supervisor import Child, Supervisor

API_HOST = "127.0.0.1"
DEMO_BACKLOG = Path(__file__).parent / "demo" / "backlog.json"
err = Console(stderr=True, highlight=False)


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def load_demo(database_url: str) -> int:
    """(Re)load the demo backlog: its cards start from TODO every time."""
    from squad.store import CardStore

    store = CardStore(database_url)
    specs = parse_backlog(load_file(DEMO_BACKLOG))
    store.delete_cards([s.card_id for s in specs])
    added, _ = store.add_cards(specs)
    store.dispose()
    return added


def run_up(*, demo: bool, port: int, concurrency: int) -> int:
    """Start Redis (if needed), worker, beat, orchestrator and API; supervise until stopped."""
    settings = load_settings()
    ensure_port_free(API_HOST, port)  # before anything starts: never advertise another process's URL
    env = dict(os.environ)
    embedded: EmbeddedRedis | None = None
    if _answers(settings.broker):
        err.print(f"using Redis at {mask_url(settings.redis_url)}")
    else:
        embedded = EmbeddedRedis(Path(".squad") / "redis")
        embedded.start()
        env["SQUAD_REDIS_URL"] = embedded.url
        for key in ("SQUAD_BROKER_URL", "SQUAD_RESULT_BACKEND", "SQUAD_EVENTS_URL"):
            env.pop(key, None)
        err.print(f"no Redis answered at {mask_url(settings.redis_url)}; started embedded redis-server at "
                  f"{embedded.url} (AOF in .squad/redis)")
    if demo:
        if "SQUAD_DATABASE_URL" not in os.environ:
            env["SQUAD_DATABASE_URL"] = "sqlite:///.squad/demo.db"
        n = load_demo(env.get("SQUAD_DATABASE_URL", settings.database_url))
        err.print(f"loaded the demo backlog: {n} cards run by the built-in demo agent")
    env["USE_CELERY"] = "true"
    py = [sys.executable, "-m", "squad"]
    children = [
        Child("worker", [*py, "worker", "--concurrency", str(concurrency), "--hostname", "squad-up@%h"], env),
        Child("beat", [*py, "beat", "--loglevel", "WARNING"], env),
        Child("orchestrator", [*py, "orchestrate", "--mode", "celery", "--interval", "1"], env),
    ]
    if importlib.util.find_spec("squad.api") is not None:
        children.append(Child("api", [*py, "serve", "--port", str(port)], env))
        err.print(f"dashboard and API on http://{API_HOST}:{port} (Ctrl-C stops everything)")
    sup = Supervisor(children)
    sup.install_signal_handlers()
    try:
        return sup.run()
    finally:
        if embedded is not None:
            embedded.stop()
        err.print("stopped")
