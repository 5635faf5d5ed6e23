"""`squad status`, `squad logs`, `squad watch`: looking at what runs (what they print is in `logs.py`
and `watch.py`, imported when the command runs)."""

from __future__ import annotations

from typing import Annotated

import typer

from squad.cli.common import cli_settings, cli_store
from squad.cli.options import JsonOpt


def status(as_json: JsonOpt = False) -> None:
    """Health: database, Redis, Celery workers, mode, queue depth, cards by status."""
    from squad.cli.quick import show_status  # (`squad status` alone is answered by squad.entry)

    show_status(as_json=as_json)


def logs(
    card_id: Annotated[str, typer.Argument(help="Card id.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines live.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="Lines to show.")] = 100,
    run: Annotated[int | None, typer.Option(min=1, help="Archived log of attempt N.")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Bytes as the agent wrote them (control characters"
                                      " included); otherwise they are shown escaped.")] = False,
) -> None:
    """Show a card's log: live from Redis, or archived in the store."""
    from squad.cli.logs import follow_logs, show_logs

    settings = cli_settings()
    store = cli_store(settings)
    store.get_card(card_id)
    if follow:
        follow_logs(settings, store, card_id, limit=limit, raw=raw)
    else:
        show_logs(settings, store, card_id, limit=limit, attempt=run, raw=raw)


def watch(interval: Annotated[float, typer.Option(min=0.1, help="Redraw period.")] = 0.5) -> None:
    """Live progress bars of running cards, updated from the event stream."""
    from squad.cli.watch import run_watch

    settings = cli_settings()
    run_watch(settings, cli_store(settings), interval=interval)
