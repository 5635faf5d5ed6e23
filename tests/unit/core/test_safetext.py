"""Every terminal table is built by `squad.core.safetext.table`: one escaping for every cell."""

from __future__ import annotations

import ast
from pathlib import Path

from rich.console import Console
from rich.progress_bar import ProgressBar
from rich.text import Text

from squad.core.safetext import cell, table

SRC = Path(__file__).resolve().parents[3] / "src" / "squad"


def test_no_module_but_safetext_builds_a_rich_table_or_adds_a_row() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "safetext.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "rich.table":
                offenders.append(f"{path.relative_to(SRC)}: imports rich.table")
            if isinstance(node, ast.Attribute) and node.attr == "add_row":
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}: .{node.attr}")
    assert offenders == []


def test_every_cell_is_escaped_whatever_its_type_and_drawings_are_kept() -> None:
    evil = "\x1b]0;owned\x07 [bold]x[/] \u202etxt"
    grid = table(("\x1b[2Jcol", "b", "c", "d"),
                 [(evil, Text(evil, style="red"), 7, ProgressBar(total=100, completed=50, width=5))])
    console = Console(width=400, record=True, color_system=None, force_terminal=False)
    console.print(grid)
    shown = console.export_text()
    assert "\x1b" not in shown and "\u202e" not in shown and "\x07" not in shown
    assert "\\x1b]0;owned\\x07 [bold]x[/] \\u202etxt" in shown and "\\x1b[2Jcol" in shown
    assert shown.count("\\x1b]0;owned") == 2 and shown.count("\\u202etxt") == 2  # the Text cell too (Rich drops BEL)
    assert cell(evil).plain == "\\x1b]0;owned\\x07 [bold]x[/] \\u202etxt"
