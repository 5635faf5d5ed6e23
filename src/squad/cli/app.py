"""The `squad` command: the root app, its commands (one module per group, as celery's `bin/` and rq's
`cli/` do), and `main`, which maps every error to one line on stderr and an exit code.

Commands are thin: parse, call one domain function, print. Their modules import what they use inside
each command, so `squad --help` pays for Typer only (docs/benchmarks.md, "CLI").
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from squad.cli import cards, observe, questions, review, services, setup, team
from squad.cli.guard import run_command
from squad.core.constants import VERSION_LINES

app = typer.Typer(help="Squad Orchestrator: run a backlog of cards through AI coding agents.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(VERSION_LINES["--version"])
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """Squad Orchestrator: run a backlog of cards through AI coding agents."""


def version() -> None:
    """Print the version."""
    sys.stdout.write(VERSION_LINES["version"])  # `squad version` alone is answered by squad.entry


# Every command, in the order `squad --help` lists them; then the groups.
for _command in (services.worker, services.beat, services.serve, services.orchestrate, services.up,
                 observe.logs, cards.retry, cards.cancel, review.land, observe.status, observe.watch,
                 setup.deploy, setup.doctor, setup.init, team.audit, questions.answer, questions.questions,
                 questions.mcp, version):
    app.command()(_command)
for _name, _group in (("backlog", cards.backlog_app), ("card", cards.card_app), ("agents", setup.agents_app),
                      ("review", review.review_app), ("workspace", review.workspace_app),
                      ("token", team.token_app), ("notify", team.notify_app), ("schedule", team.schedule_app)):
    app.add_typer(_group, name=_name)


_HELP_ONLY = {"--help", "-h", "--version"}


def main(argv: list[str] | None = None) -> None:
    """Entry point: every error is one line on stderr (exit 2 for usage and input errors);
    SIGTERM stops a command like Ctrl-C does, with exit code 143 (`squad.cli.guard`)."""
    args = sys.argv[1:] if argv is None else argv
    # help and version log nothing: spare them structlog's import
    run_command(lambda: _run_typer(argv), log=bool(args) and not _HELP_ONLY & set(args))


def _errors(click_name: str, *ours: type[BaseException]) -> tuple[Any, ...]:
    """`ours`, and click's exception class `click_name` once click is loaded: a Typer older than 0.26
    parses with click itself; later ones vendor it, and importing click only for its exception
    classes cost every command."""
    exceptions = sys.modules.get("click.exceptions")
    return (*ours, getattr(exceptions, click_name)) if exceptions else ours


def _app_for(args: Sequence[str]) -> typer.Typer:
    """The app holding only the command `args` name: Typer builds every command it holds (inspecting
    each function and evaluating its annotations) before it parses. The whole app otherwise: the root
    help, `--version`, an unknown command (its error and suggestions)."""
    name = args[0] if args else ""
    commands = [c for c in app.registered_commands
                if (c.name or (c.callback.__name__.lower().replace("_", "-") if c.callback else "")) == name]
    groups = [g for g in app.registered_groups if g.name == name]
    if not commands and not groups:
        return app
    one = copy.copy(app)
    one.registered_commands, one.registered_groups = commands, groups
    return one


def _run_typer(argv: list[str] | None) -> int:
    """The Typer app's exit code for `argv`; its own exceptions mapped here, every other error by
    `squad.cli.guard`."""
    try:
        # standalone_mode=False: click returns (does not raise) the code of a `typer.Exit(code)`
        code = _app_for(sys.argv[1:] if argv is None else argv)(args=argv, standalone_mode=False, prog_name="squad")
    except _errors("Exit") as exc:
        return int(exc.exit_code)
    except _errors("Abort", typer.Abort):
        sys.stderr.write("squad: aborted\n")
        return 130
    except _errors("ClickException", typer.TyperException) as exc:
        # Typer >= 0.26 parses with its own vendored click: its usage errors are TyperExceptions.
        if type(exc).__name__ == "NoArgsIsHelpError":  # `squad card` alone: the help, as click prints it
            sys.stderr.write(exc.format_message().rstrip() + "\n")
        else:
            sys.stderr.write(f"squad: error: {' '.join(exc.format_message().split())}\n")
        return 2
    return code if isinstance(code, int) else 0
