"""The one "Celery or local" decision, for the orchestrator, producers, `squad status` and /health.

Apart from `dispatch.py` (which re-exports it) so that `squad status` decides without importing
the runner, the event bus and structlog.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from squad.core.errors import BrokerUnavailable, SquadError
from squad.core.masking import mask_url

if TYPE_CHECKING:
    from squad.core.settings import Settings

MODES = ("auto", "celery", "local")


@dataclass(frozen=True)
class ExecutionMode:
    """Where cards run, and why auto mode fell back to local (None when it did not)."""

    name: Literal["celery", "local"]
    reason: str | None = None


def broker_answers(settings: Settings) -> bool:
    """True when the Celery broker's Redis answers a PING."""
    from squad.live.broker import BrokerView

    view = BrokerView(settings.broker)
    try:
        return view.ping()
    finally:
        view.close()


def execution_mode(settings: Settings, requested: str = "auto", *, broker_ok: bool | None = None,
                   need_consumer: bool = False) -> ExecutionMode:
    """Celery when asked for (or `auto` with USE_CELERY) and a broker answers, else local.

    `broker_ok` is a ping the caller already made (the API pings asynchronously); otherwise the
    broker is pinged here. `need_consumer` (a one-shot orchestrator, `--once`, in `auto` mode) also
    asks whether a worker consumes `cards`: a one-shot run would otherwise end with its cards still
    queued. A long-running orchestrator does not ask: workers may start after it.
    `celery` asked for explicitly with no broker raises BrokerUnavailable.
    """
    if requested not in MODES:
        raise SquadError(f"unknown mode {requested!r} (use auto, celery or local)")
    if requested == "local" or (requested == "auto" and not settings.use_celery):
        return ExecutionMode("local")
    if not (broker_answers(settings) if broker_ok is None else broker_ok):
        if requested == "celery":
            raise BrokerUnavailable(f"no Redis broker answers at {mask_url(settings.broker)}")
        return ExecutionMode("local", f"no Redis broker answers at {mask_url(settings.broker)}")
    if requested == "celery" or not need_consumer:
        return ExecutionMode("celery")
    from squad.live.celery_control import no_consumer_reason

    reason = no_consumer_reason(settings)
    return ExecutionMode("local", reason) if reason else ExecutionMode("celery")
