"""The `squad` program's entry point (`python -m squad`, the `squad` script).

`squad version` and `squad --version` are answered here, before the Typer app is imported: Typer
and Click, and pydantic, which Typer uses to coerce every option, cost several times the
interpreter's own start-up (docs/benchmarks.md, "CLI"). `squad status` [`--json`] is run without the
Typer app too (`squad.cli.quick`). Everything else goes to `squad.cli.app`.
"""

from __future__ import annotations

import sys

from squad.core.constants import VERSION_LINES


def main(argv: list[str] | None = None) -> None:
    """Run one `squad` command and exit with its code."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 1 and args[0] in VERSION_LINES:
        sys.stdout.write(VERSION_LINES[args[0]])
        sys.exit(0)
    try:
        from squad.cli.quick import quick_command

        body = quick_command(args)
        if body is not None:
            from squad.cli.guard import run_command

            run_command(body)
        from squad.cli.app import main as run_app
    except KeyboardInterrupt:  # Ctrl-C while the CLI is still importing: nothing ran, no traceback
        sys.exit(130)
    except Exception as exc:  # ... or an error the import machinery raised while handling it
        from squad.cli.guard import after_interrupt

        if after_interrupt(exc):
            sys.exit(130)
        raise
    run_app(argv)
