"""The fake agents of tests/agents/ in a squad.toml, and the ledgers they keep to count their own runs.

A test counts executions with the agents' ledgers, not with the store under test.

Agents run in their sandbox (bwrap by default, docs/security.md): a squad.toml of these helpers
declares what the fake agents need besides their card's folder: their scripts (tests/agents/) and
squad itself (src/) read-only, and the project's folder, where they keep ledgers and markers, read-write.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from support.paths import AGENTS, SRC

PY = sys.executable
#: What every fake agent (a script of tests/agents/, run by the venv's python, maybe importing squad) reads.
AGENT_RO_PATHS = (AGENTS, SRC)


def sandbox_toml(*rw_paths: Path | str, ro_paths: tuple[Path | str, ...] = ()) -> str:
    """A `[sandbox]` table letting the fake agents work confined: tests/agents/ and src/ (and
    `ro_paths`) readable, `rw_paths` (e.g. the folder of a ledger) writable. Put it after the
    top-level keys of a squad.toml."""
    ro = [str(path) for path in (*AGENT_RO_PATHS, *ro_paths)]
    return (f"[sandbox]\nro_paths = {json.dumps(ro)}\n"
            f"rw_paths = {json.dumps([str(path) for path in rw_paths])}\n")


def confined(toml: str, *rw_paths: Path | str, ro_paths: tuple[Path | str, ...] = ()) -> str:
    """A squad.toml's text with `sandbox_toml(*rw_paths, ro_paths=ro_paths)` before its first table."""
    lines = toml.splitlines(keepends=True)
    first = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), len(lines))
    head = "".join(lines[:first])
    if head and not head.endswith("\n"):
        head += "\n"
    return head + sandbox_toml(*rw_paths, ro_paths=ro_paths) + "".join(lines[first:])


def write_agents(root: Path, **agents: list[str]) -> None:
    """A squad.toml with these agents (markers parser); the first one is the default. In their
    sandbox they may write in `root` (their ledgers and markers)."""
    lines = [f'default_agent = "{next(iter(agents))}"', sandbox_toml(root).rstrip("\n")]
    for name, argv in agents.items():
        lines += [f"[agents.{name}]", f"command = {json.dumps(argv)}", 'parser = "markers"']
    (root / "squad.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_ledger_agent(root: Path, seconds: float, release: Path | None = None) -> Path:
    """A squad.toml whose default agent appends start/done lines to a ledger file (and, with
    `release`, runs until that file exists)."""
    ledger = root / "ledger.txt"
    argv = [PY, str(AGENTS / "ledger.py"), str(ledger), str(seconds), *([str(release)] if release else [])]
    (root / "squad.toml").write_text(
        f'default_agent = "ledger"\n{sandbox_toml(ledger.parent, *([release.parent] if release else []))}'
        f'[agents.ledger]\ncommand = {json.dumps(argv)}\nparser = "markers"\n',
        encoding="utf-8")
    return ledger


def ledger_counts(ledger: Path, event: str) -> Counter[str]:
    """How many `event` lines each card has in the ledger (tests/agents/ledger.py)."""
    if not ledger.exists():
        return Counter()
    return Counter(line.split()[1] for line in ledger.read_text().splitlines() if line.startswith(event + " "))


def read_ledger(path: Path) -> list[tuple[str, str, int, int]]:
    """(word, card, attempt, pid) lines written by tests/agents/ledger_steps.py."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        word, card, attempt, pid = line.split()
        rows.append((word, card, int(attempt), int(pid)))
    return rows


def commits(ledger: list[tuple[str, str, int, int]]) -> dict[str, int]:
    """How many times each card's work was committed (the agent's own count)."""
    out: dict[str, int] = {}
    for word, card, _attempt, _pid in ledger:
        if word == "commit":
            out[card] = out.get(card, 0) + 1
    return out
