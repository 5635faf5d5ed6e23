"""What `squad up` shows: its clock stops when every card has settled (the live view's last line)."""

from __future__ import annotations

import io
import time
from pathlib import Path

from rich.console import Console

from squad.ops.up_view import CardLine, UpView


def line(card_id: str, status: str) -> CardLine:
    return CardLine(card_id=card_id, status=status, progress=100 if status == "DONE" else 0, step="", attempts=1,
                    error="", next_in_s=None)


def test_the_clock_stops_at_done_and_goes_on_when_cards_run_again() -> None:
    # Given a live view of `squad up` started 100 s ago, whose two cards have just settled
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False, color_system=None)
    view = UpView(console, live=True, api_url=None, redis_desc="r", store_desc="s", logs_dir=Path("logs"),
                  started=time.monotonic() - 100)
    with view:
        view.update([line("A", "DONE"), line("B", "DONE")], api_ready=True, workers=[], children={})
        assert view.done_line == "2/2 done in 100 s"
        # When a minute passes with nothing left to do
        view.started -= 60
        view.update([line("A", "DONE"), line("B", "DONE")], api_ready=True, workers=[], children={})
    # Expect the footer's clock to stay at the time the cards settled
    shown = out.getvalue()
    assert "2 DONE · 100 s" in shown and "160 s" not in shown, shown
    # ... and to go on when a card runs again
    view.update([line("A", "DONE"), line("C", "IN_PROGRESS")], api_ready=True, workers=[], children={})
    assert view.done_line is None and view.done_after_s is None
