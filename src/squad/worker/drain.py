"""`squad worker --drain`: a worker stops taking cards, finishes the ones it holds, then exits.

For rolling upgrades: install the new version, drain a machine's worker, and its service manager
(supervisord, systemd, `squad up`) starts it again on the new code. Nothing is interrupted, so no
card is retried because of the upgrade.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from squad.core.constants import HEALTH_PROBE_TIMEOUT_S
from squad.core.errors import SquadError
from squad.core.settings import Settings
from squad.store.card_store import CardStore

DRAIN_POLL_S = 1.0
CONTROL_TIMEOUT_S = 2.0


def drain_workers(settings: Settings, hostname: str | None, *, timeout_s: float,
                  say: Callable[[str], None], poll_s: float = DRAIN_POLL_S) -> list[str]:
    """Drain the named worker (`%h` expands to this host), or every worker of this host; returns their names."""
    from celery.utils.nodenames import host_format

    from squad.live.celery_config import make_celery

    app = make_celery(settings)
    try:
        replies = app.control.ping(timeout=max(HEALTH_PROBE_TIMEOUT_S, CONTROL_TIMEOUT_S)) or []
        online = sorted(name for reply in replies for name in reply)
        if hostname:
            wanted = host_format(hostname)
            targets = [name for name in online if name == wanted]
        else:
            host = socket.gethostname()
            targets = [name for name in online if name.partition("@")[2] == host]
        if not targets:
            raise SquadError(f"no worker to drain: {hostname or 'none on this host'} "
                             f"(online: {', '.join(online) or 'none'})")
        inspect = app.control.inspect(destination=targets, timeout=CONTROL_TIMEOUT_S)
        for name, queues in (inspect.active_queues() or {}).items():
            for queue in queues:
                app.control.cancel_consumer(queue["name"], destination=[name], reply=True,
                                            timeout=CONTROL_TIMEOUT_S)
        # A remote shutdown is Celery's warm shutdown: running cards finish; messages prefetched but
        # not started go back to the broker (unacked) for another worker.
        app.control.shutdown(destination=targets)
        say(f"draining {', '.join(targets)}: taking no new cards, waiting for the running ones")
        deadline = time.monotonic() + timeout_s
        store = CardStore(settings.database_url)
        try:
            # The worker stops answering control messages at once; its open runs say when it is done.
            while (running := store_open_runs(store, targets)) > 0:
                if time.monotonic() > deadline:
                    raise SquadError(f"drain timed out after {timeout_s:g} s with {running} card(s) still running")
                time.sleep(poll_s)
        finally:
            store.dispose()
        say(f"drained and stopped: {', '.join(targets)}")
        return targets
    finally:
        app.close()


def store_open_runs(store: CardStore, workers: list[str]) -> int:
    """Runs of these workers that have not ended (their cards are still running)."""
    import sqlalchemy as sa

    from squad.store.tables import runs as runs_t

    query = sa.select(sa.func.count()).select_from(runs_t).where(
        runs_t.c.worker.in_(workers), runs_t.c.ended_at.is_(None))
    with store.engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)
