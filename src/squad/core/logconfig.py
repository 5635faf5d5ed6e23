"""Structured logs for every process (CLI, worker, beat, orchestrator, API).

JSON lines when stderr is not a terminal, so a log collector (journald, supervisord files, Loki)
gets fields instead of prose; readable lines on a terminal. Celery's and uvicorn's own loggers go
through the same renderer. Context bound with `structlog.contextvars` (card_id, task_id, attempt,
worker) is added to every line logged while it is bound.

structlog is imported inside the functions: importing it (its `dev` module pulls in Rich's
tracebacks and pretty-printer) costs a short CLI command about as much as starting Python, and
most commands never log (docs/benchmarks.md, "CLI").
"""

from __future__ import annotations

import logging
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any


def configure_logging(level: int | str = logging.WARNING, *, json_lines: bool | None = None,
                      lazy: bool = False) -> None:
    """Configure structlog and the stdlib root logger once per process (later calls reconfigure).

    `lazy` (the CLI's commands): the same configuration and output, but structlog is imported only
    when a record is formatted or something imports structlog (it is configured right after that
    import, before any of its loggers can be used).
    """
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _ConfigureOnImport)]
    handler = logging.StreamHandler(sys.stderr)
    if lazy and "structlog" not in sys.modules:
        handler.setFormatter(_LazyFormatter(json_lines))
        sys.meta_path.insert(0, _ConfigureOnImport())
    else:
        _configure_structlog()
        handler.setFormatter(_formatter(json_lines))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # Alembic narrates every migration step at INFO; a CLI error must stay one line.
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _shared() -> list[Any]:
    """Processors run on every record, structlog's and the stdlib's."""
    import structlog

    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


def _configure_structlog() -> None:
    import structlog

    structlog.configure(
        processors=[*_shared(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def _formatter(json_lines: bool) -> logging.Formatter:
    import structlog

    renderer: Any = (structlog.processors.JSONRenderer() if json_lines
                     else structlog.dev.ConsoleRenderer(colors=False))
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    )


class _LazyFormatter(logging.Formatter):
    """The root handler's formatter, built by its first record."""

    def __init__(self, json_lines: bool) -> None:
        super().__init__()
        self._json_lines = json_lines
        self._real: logging.Formatter | None = None

    def format(self, record: logging.LogRecord) -> str:
        if self._real is None:
            self._real = _formatter(self._json_lines)
        return self._real.format(record)


class _ConfigureOnImport:
    """One shot: the first `import structlog` configures it as soon as the package has loaded.

    A meta path finder and a loader by their methods (the import system asks for nothing else):
    subclassing `importlib.abc`'s classes imports `importlib.resources`, a tenth of a short
    command's start-up (docs/benchmarks.md "CLI")."""

    def find_spec(self, name: str, path: Any = None, target: ModuleType | None = None) -> ModuleSpec | None:
        if name != "structlog":
            return None
        import importlib.util

        sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenConfigure(spec.loader)  # type: ignore[assignment]  # a Loader by its methods
        return spec


class _ThenConfigure:
    """structlog's own loader, then `_configure_structlog()`."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _configure_structlog()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)
