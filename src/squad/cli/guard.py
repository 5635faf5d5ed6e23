"""How every `squad` command ends: each error as one line on stderr with its exit code (2 for usage
and input errors), SIGTERM handled like Ctrl-C (exit 143), never a traceback. Shared by the Typer app
(`squad.cli.app`) and the commands `squad.entry` answers without it (`squad.cli.quick`)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from squad.core.errors import SquadError
from squad.core.safetext import escape_controls


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so each command's cleanup runs.

    A shell without job control starts background jobs with SIGINT ignored: a command that stopped
    only on Ctrl-C could then never be stopped cleanly. Commands that install their own handlers
    (supervised services, the orchestrator, uvicorn) replace this one.
    """


EXIT_TERMINATED = 128 + signal.SIGTERM
_terminated: list[bool] = []


def _raise_terminated(_signum: int, _frame: object) -> None:
    _terminated.append(True)
    raise Terminated()


def run_command(body: Callable[[], int], *, log: bool = True) -> NoReturn:
    """Run one command's `body` (which returns its exit code) and exit: SIGTERM stops it like Ctrl-C
    does, with exit code 143; every error is one line on stderr. `log`: set up the CLI's logging
    (lazily: structlog is imported by the first record only)."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        sys.exit(_guarded(body, log=log))
    except SystemExit:
        if _terminated:  # Typer turns the interrupt into exit 130, a command may return normally
            sys.exit(EXIT_TERMINATED)
        raise


def _guarded(body: Callable[[], int], *, log: bool) -> int:
    try:
        if log:  # (inside: a Ctrl-C while it imports is exit 130, not a traceback)
            _configure_logging()
        return body()
    except SquadError as exc:
        # Problems quote user input (ids, paths): shown escaped, never as terminal control sequences.
        msg = "; ".join(exc.problems) if hasattr(exc, "problems") else str(exc)
        if hasattr(exc, "problems") and len(exc.problems) > 1:
            for problem in exc.problems:
                sys.stderr.write(f"squad: error: {escape_controls(problem)}\n")
        else:
            sys.stderr.write(f"squad: error: {escape_controls(msg)}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # last resort: one line, never a traceback
        if after_interrupt(exc):
            return 130
        sys.stderr.write(f"squad: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                         " (set SQUAD_DEBUG=1 for details)\n")
        if os.environ.get("SQUAD_DEBUG"):
            raise
        return 1


def after_interrupt(exc: BaseException) -> bool:
    """An error raised while a Ctrl-C was being handled: the interrupt's, not a fault of ours.

    CPython can turn a Ctrl-C that lands while it builds an import's error message into `TypeError:
    expected a message argument`, with the KeyboardInterrupt as its context (seen once in 100
    interrupted starts)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _configure_logging() -> None:
    import logging

    from squad.core.logconfig import configure_logging

    configure_logging(logging.DEBUG if os.environ.get("SQUAD_DEBUG") else logging.WARNING, lazy=True)
