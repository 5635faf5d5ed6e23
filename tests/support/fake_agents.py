"""The fake agents of tests/agents/ as a project configures them (squad.toml), and the ledgers they keep:
the agents count their own runs, so a test does not count executions with the store under test."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from support.paths import AGENTS

PY = sys.executable


def write_ledger_agent(root: Path, seconds: float, release: Path | None = None) -> Path:
    """A squad.toml whose default agent appends start/done lines to a ledger file (and, with
    `release`, runs until that file exists)."""
    ledger = root / "ledger.txt"
    argv = [PY, str(AGENTS / "ledger.py"), str(ledger), str(seconds), *([str(release)] if release else [])]
    (root / "squad.toml").write_text(
        f'default_agent = "ledger"\n[agents.ledger]\ncommand = {json.dumps(argv)}\nparser = "markers"\n',
        encoding="utf-8")
    return ledger


def ledger_counts(ledger: Path, event: str) -> Counter[str]:
    """How many `event` lines each card has in the ledger (tests/agents/ledger.py)."""
    if not ledger.exists():
        return Counter()
    return Counter(line.split()[1] for line in ledger.read_text().splitlines() if line.startswith(event + " "))
