"""Structured logs for every process (CLI, worker, beat, orchestrator, API).

JSON lines when stderr is not a terminal, so a log collector (journald, supervisord files, Loki)
gets fields instead of prose; readable lines on a terminal. Celery's and uvicorn's own loggers go
through the same renderer. Context bound with `structlog.contextvars` (card_id, task_id, attempt,
worker) is added to every line logged while it is bound.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure_logging(level: int | str = logging.WARNING, *, json_lines: bool | None = None) -> None:
    """Configure structlog and the stdlib root logger once per process (later calls reconfigure)."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Any = (structlog.processors.JSONRenderer() if json_lines
                     else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # Alembic narrates every migration step at INFO; a CLI error must stay one line.
    logging.getLogger("alembic").setLevel(logging.WARNING)
