"""`squad backlog …`, `squad card …`, `squad retry`, `squad cancel`: the cards themselves."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from squad.cli.common import (
    audited,
    card_json,
    cli_context,
    cli_settings,
    cli_store,
    field,
    out,
    print_json,
)
from squad.cli.options import JsonOpt
from squad.core.errors import SquadError
from squad.core.safetext import escape_controls, table

backlog_app = typer.Typer(help="Import, export and validate backlog files.", no_args_is_help=True)
card_app = typer.Typer(help="Add, list and show cards.", no_args_is_help=True)
CARD_PAGE = 100  # `card list` shows one page by default


@backlog_app.command("import")
@audited("import", None)
def backlog_import(
    file: Annotated[Path, typer.Argument(help="JSON or YAML backlog file.")],
    update: Annotated[bool, typer.Option("--update", help="Rewrite cards that are still TODO.")] = False,
) -> None:
    """Import cards: all or nothing."""
    from squad.actions.backlog import import_file

    with cli_context() as ctx:
        added, updated = import_file(ctx.store, file, update=update, settings=ctx.settings, events=ctx.events)
    out.print(f"imported {added} card(s), updated {updated}")


@backlog_app.command("export")
def backlog_export(file: Annotated[Path | None, typer.Argument(help="Output file (stdout if omitted).")] = None
                   ) -> None:
    """Export every card's fields (import takes them back)."""
    from squad.actions.backlog import dump, export_backlog

    text = dump(export_backlog(cli_store(cli_settings())), file)
    if file is None:
        sys.stdout.write(text)
    else:
        file.write_text(text, encoding="utf-8")
        out.print(f"exported to {file}")


@backlog_app.command("validate")
def backlog_validate(file: Annotated[Path, typer.Argument(help="JSON or YAML backlog file.")]) -> None:
    """Check a file without importing it."""
    from squad.actions.backlog import validate_file

    specs = validate_file(file, cli_settings())
    out.print(f"{file}: {len(specs)} card(s), valid")


@card_app.command("add")
@audited("add")
def card_add(
    card_id: Annotated[str, typer.Option("--id", help="Card id.")],
    title: Annotated[str, typer.Option("--title", help="Title.")],
    agent: Annotated[str | None, typer.Option(help="Agent name.")] = None,
    squad: Annotated[str | None, typer.Option(help="Squad name.")] = None,
    priority: Annotated[int, typer.Option(help="0-9, 9 = most urgent.")] = 5,
    depends_on: Annotated[list[str] | None, typer.Option("--depends-on", help="Dependency (repeatable).")] = None,
    description: Annotated[str, typer.Option(help="What to do.")] = "",
    workdir: Annotated[str | None, typer.Option(help="Working directory (inside SQUAD_WORKDIR or an allowed root).")
                       ] = None,
) -> None:
    """Add one card."""
    from squad.actions.backlog import add_cards

    card = {"card_id": card_id, "title": title, "agent": agent, "squad": squad, "priority": priority,
            "depends_on": depends_on or [], "description": description, "workdir": workdir}
    with cli_context() as ctx:
        add_cards(ctx.store, [card], settings=ctx.settings, events=ctx.events)
    out.print(f"added card {card_id}")


@card_app.command("list")
def card_list(
    status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
    squad: Annotated[str | None, typer.Option(help="Only this squad.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Cards per page (the most urgent first).")] = CARD_PAGE,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many cards.")] = 0,
    show_all: Annotated[bool, typer.Option("--all", help="Every card, no page.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List cards, most urgent first (one page of --limit cards unless --all)."""
    from squad.core.statuses import Status

    if status is not None and status.upper() not in Status.__members__:
        raise SquadError(f"unknown status {status!r} (one of {', '.join(Status.__members__)})")
    store = cli_store(cli_settings())
    wanted = status.upper() if status else None
    cards = store.list_cards(status=wanted, squad=squad, limit=None if show_all else limit, offset=offset)
    if as_json:
        print_json([card_json(c) for c in cards])
        return
    rows = [(c.card_id, c.status.value, str(c.priority), c.squad or "", c.agent or "", f"{c.progress}%",
             (c.current_step or "")[:40], c.title[:60]) for c in cards]
    sys.stdout.write(_plain_table(("card", "status", "p", "squad", "agent", "progress", "step", "title"), rows))
    if not show_all and len(cards) == limit:
        total = store.count_cards(status=wanted, squad=squad)
        if total > offset + limit:
            sys.stderr.write(f"showing {offset + 1}-{offset + limit} of {total} cards "
                             f"(--offset {offset + limit} for the next page, --all for every card)\n")


def _plain_table(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    """Aligned columns as plain text: a few microseconds a row (a Rich table costs ~1 ms a row).

    Control characters in card text are shown escaped, never sent to the terminal.
    """
    cells = [headers, *[tuple(escape_controls(text) for text in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(text.ljust(w) for text, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines) + "\n"


@card_app.command("show")
def card_show(card_id: Annotated[str, typer.Argument(help="Card id.")], as_json: JsonOpt = False) -> None:
    """One card with its runs."""
    store = cli_store(cli_settings())
    card = store.get_card(card_id)
    runs = store.list_runs(card_id)
    data = card_json(card)
    data["runs"] = [r.model_dump(mode="json") for r in runs]
    if as_json:
        print_json(data)
        return
    for key, value in data.items():
        if key != "runs":
            out.print(field(key, value))
    out.print(table(("attempt", "status", "worker", "started", "ended", "exit", "cost", "sandbox", "error"),
                    [(r.attempt, r.status, r.worker or "", r.started_at or "", r.ended_at or "",
                      "" if r.exit_code is None else r.exit_code, "" if r.cost_usd is None else f"{r.cost_usd:.4f}",
                      r.sandbox or "", (r.error or "")[:60]) for r in runs]))


@audited("retry")
def retry(card_id: Annotated[str, typer.Argument(help="Card id.")],
          force: Annotated[bool, typer.Option(help="Also restart a running or DONE card.")] = False) -> None:
    """Queue a new attempt of a FAILED or CANCELLED card (a running one is ended first with --force)."""
    from squad.actions.lifecycle import retry_card

    with cli_context() as ctx:
        result = retry_card(ctx.producer, card_id, force=force)
    out.print(result.message)


@audited("cancel")
def cancel(card_id: Annotated[str, typer.Argument(help="Card id.")]) -> None:
    """Cancel a card: its agent's process group is ended, no retry."""
    from squad.actions.lifecycle import cancel_card

    with cli_context() as ctx:
        card = cancel_card(ctx.producer, card_id)
    out.print(f"card {card.card_id} {card.status.value}")
