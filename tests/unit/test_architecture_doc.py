"""docs/architecture.md against the code: the card lifecycle table is the transition table and the
status facts, and the folder tables name every module of the package (and no other)."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import squad
from squad.core.statuses import STATUS_FACTS, TRANSITIONS, StatusFacts

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
PACKAGE = Path(squad.__file__).parent


def section(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def rendered_lifecycle() -> list[str]:
    """The lifecycle table as the code says it should read."""
    rows = ["| status | meaning | next | facts |", "|---|---|---|---|"]
    for status, facts in STATUS_FACTS.items():
        nxt = ", ".join(f"`{n.value}`" for n in STATUS_FACTS if n in TRANSITIONS[status])
        true = [f.name.replace("_", " ") for f in fields(StatusFacts)
                if getattr(facts, f.name) is True]
        if facts.celery_state:
            true.append(f"task state {facts.celery_state}")
        rows.append(f"| `{status.value}` | {facts.meaning} | {nxt} | {', '.join(true) or '—'} |")
    return rows


def test_the_lifecycle_table_is_the_transition_table_and_the_status_facts() -> None:
    table = [line for line in section("Card lifecycle").splitlines() if line.startswith("|")]
    assert table == rendered_lifecycle(), "\n".join(rendered_lifecycle())


def test_the_folder_tables_name_every_module_and_only_those() -> None:
    layers = section("Layers")
    named: set[str] = set()
    for block in re.split(r"\n### ", layers)[1:]:
        folder = re.match(r"`([a-z_]+)/`", block)
        assert folder, block[:40]
        for row in block.splitlines():
            if not row.startswith("| `"):
                continue
            first_cell = row.split("|")[1]
            for name in re.findall(r"`([^`]+)`", first_cell):
                for part in name.split(", "):
                    named.add(f"{folder.group(1)}/{part.strip()}")
    modules = {str(p.relative_to(PACKAGE)) for p in PACKAGE.glob("*/*.py") if p.name != "__init__.py"}
    folders = {str(p.relative_to(PACKAGE)) + "/" for p in PACKAGE.glob("*/*") if p.is_dir()
               and p.name != "__pycache__"}
    listed_files = {n for n in named if n.endswith(".py")}
    listed_folders = {n for n in named if n.endswith("/")}
    assert listed_files == modules, (sorted(modules - listed_files), sorted(listed_files - modules))
    assert listed_folders <= folders | {"api/../web/"}, sorted(listed_folders - folders)
