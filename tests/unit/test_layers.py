"""The folder order of docs/architecture.md "Layers": a folder imports only folders below it.

Read from the source with `ast` (every import, those inside functions and under TYPE_CHECKING
too), so an import that runs back up fails here before it becomes a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import squad

PACKAGE = Path(squad.__file__).parent

#: Each folder (or top-level module) and its floor: a module may import its own folder and any
#: floor below its own, never a folder of its own floor or above (docs/architecture.md "Layers").
FLOORS: dict[str, int] = {
    "core": 0,
    "store": 1, "live": 1, "agents": 1, "channel": 1,
    "attempt": 2,
    "orchestration": 3,
    "worker": 4, "actions": 4,
    "team": 5,
    "ops": 6,
    "celery_app": 7, "submit": 7,
    "api": 8,
    "cli": 9,
    "entry": 10, "__main__": 11,
}


def _unit(module: str) -> str:
    """`squad.core.cards` -> `core`; `squad.entry` -> `entry`; `squad` -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every `squad` import in a file, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = ".".join(("squad", *path.relative_to(PACKAGE).with_suffix("").parts))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "squad"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: -node.level]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module.split(".")[0] != "squad":
                continue
            if module == "squad":  # `from squad import core` names a folder
                found += [(node.lineno, f"squad.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, module))
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


def test_every_folder_and_top_level_module_has_a_floor() -> None:
    units = {_unit(".".join(("squad", *p.relative_to(PACKAGE).with_suffix("").parts))) for p in _modules()}
    assert units - {"__init__"} == set(FLOORS), units ^ set(FLOORS)


def test_a_folder_imports_only_folders_below_it() -> None:
    wrong: list[str] = []
    for path in _modules():
        mine = _unit(".".join(("squad", *path.relative_to(PACKAGE).with_suffix("").parts)))
        for line, module in _imports(path):
            theirs = _unit(module)
            if theirs == mine:
                continue
            # the curated public surface (`squad/__init__.py`) names things of core only
            ok = theirs == "core" if mine == "__init__" else theirs != "__init__" and FLOORS[theirs] < FLOORS[mine]
            if not ok:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_edges_are_imported_only_from_above() -> None:
    # cli is imported by nothing but the entry point; api by nothing but cli (`squad serve`)
    importers: dict[str, set[str]] = {"cli": set(), "api": set()}
    for path in _modules():
        mine = _unit(".".join(("squad", *path.relative_to(PACKAGE).with_suffix("").parts)))
        for _line, module in _imports(path):
            theirs = _unit(module)
            if theirs in importers and theirs != mine:
                importers[theirs].add(mine)
    assert importers == {"cli": {"entry"}, "api": {"cli"}}


def test_package_init_files_stay_empty() -> None:
    # `squad --help` imports squad.cli: an __init__ that imports would cost every command
    for init in PACKAGE.rglob("__init__.py"):
        if init.parent == PACKAGE or "migrations" in init.parts:
            continue
        tree = ast.parse(init.read_text(encoding="utf-8"))
        code = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        assert not code, f"{init.relative_to(PACKAGE)} holds code"
