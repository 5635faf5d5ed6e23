"""Text from cards and agents is data: show it without letting it drive a terminal or flood a reply.

An agent (or a hostile issue body it read) can print ESC sequences that rewrite the operator's
screen, set the window title, or hide lines; `escape_controls` shows every C0/C1 control (except
tab) as `\\xNN` / `\\u00NN`. `excerpt` keeps error messages short whatever the input size.
Every terminal table squad prints is built by `table`, each of its cells by `cell`: one escaping
for `squad review list`, `agents check`, `card show`, `workspace list` and `squad up`'s view.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.style import Style
    from rich.table import Table
    from rich.text import Text

__all__ = ["EXCERPT_CHARS", "cell", "escape_controls", "excerpt", "table"]

EXCERPT_CHARS = 80
# C0 controls except tab, DEL, C1 controls; also the Unicode line/paragraph separators and the
# bidirectional overrides that can make a line read differently from what it contains.
_CONTROL_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """`text` with every control character shown as an escape (`\\x1b`), so a terminal only prints it."""
    return _CONTROL_RE.sub(_escape, text)


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """A short, single-line, control-free rendering of `value` for error messages."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[:limit] + f"…(+{len(text) - limit} chars)"
    return escape_controls(text)



def cell(value: object, style: str | Style = "") -> Text:
    """One table cell of card or agent text: never Rich markup, never a raw control character."""
    from rich.text import Text

    return Text(escape_controls(str(value)), style=style)


def _table_cell(value: object) -> object:
    """Text (escaped again, its style kept) and plain values through `cell`; a drawing (a progress
    bar) as it is."""
    from rich.console import ConsoleRenderable
    from rich.text import Text

    if isinstance(value, Text):
        return cell(value.plain, value.style)
    if isinstance(value, ConsoleRenderable):
        return value
    return cell(value)


def table(columns: Sequence[str], rows: Iterable[Sequence[object]], **options: Any) -> Table:
    """A Rich table whose every header and cell is escaped (see `_table_cell`)."""
    from rich.table import Table

    grid = Table(**options)
    for column in columns:
        grid.add_column(cell(column))
    for row in rows:
        grid.add_row(*(_table_cell(value) for value in row))  # type: ignore[arg-type]
    return grid
