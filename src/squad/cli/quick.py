"""Commands `squad.entry` answers without the Typer app: `squad status` and `squad status --json`.

Typer builds a command by coercing every option through pydantic and importing Click's machinery,
which costs about a third of `squad status`'s time (docs/benchmarks.md "`squad status` from what it
knows"). These argument lists have nothing to parse, so the entry point runs them here, through the
same error handling as every command (`squad.cli.guard`); anything else (`status --help`, an unknown
option) goes to the Typer app, whose `status` command calls `show_status` too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from squad.core.safetext import escape_controls

BOLD, RESET = "\x1b[1m", "\x1b[0m"


def quick_command(args: list[str]) -> Callable[[], int] | None:
    """The body of the command `args` names, when the entry point answers it itself; else None."""
    if args == ["status"]:
        return lambda: show_status(as_json=False)
    if args == ["status", "--json"]:
        return lambda: show_status(as_json=True)
    return None


def show_status(*, as_json: bool) -> int:
    """`squad status`: every probe's answer (`squad.ops.status.collect_status`), one `key: value`
    line each, or the report as JSON."""
    from squad.cli.common import cli_settings, print_json
    from squad.ops.status import collect_status

    report = collect_status(cli_settings())
    if as_json:
        print_json(report)
    else:
        sys.stdout.write(status_text(report, bold=_styled(sys.stdout)))
    return 0


def status_text(report: dict[str, Any], *, bold: bool) -> str:
    """The lines of `squad status`: nested values on one line, every value shown escaped (a
    control sequence in an error message or a worker's name is text, never a terminal command)."""
    lines = []
    for key, value in report.items():
        if isinstance(value, dict):
            value = "  ".join(f"{k} {v}" for k, v in value.items() if v) or "none"
        elif isinstance(value, list):
            value = ", ".join(map(str, value)) or "none"
        elif value is None:
            value = "unknown"
        name = f"{BOLD}{key}{RESET}" if bold else key
        lines.append(f"{name}: {escape_controls(str(value))}\n")
    return "".join(lines)


def _styled(stream: Any) -> bool:
    """Whether keys are shown bold: as Rich decides for the other commands' output (a terminal, or
    FORCE_COLOR; never a dumb terminal; NO_COLOR removes colours, not bold)."""
    if os.environ.get("TERM", "").lower() in ("dumb", "unknown"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
