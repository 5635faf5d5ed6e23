"""What a chaos test measured, appended as one JSON line per run for `docs/reliability.md`.

Set `RELIABILITY_FIGURES` to a file to record (the 3x local runs that feed the doc); unset,
nothing is written and the tests still assert everything. `scripts/reliability_table.py` turns the
file into the table, keeping the worst figure of each scenario.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

FIGURES_ENV = "RELIABILITY_FIGURES"  # not SQUAD_*: the tests clear those


def record(scenario: str, *, in_flight: int, done: int, lost: int, run_twice: int, orphans: int,
           recover_s: float, note: str = "") -> None:
    """Append one measurement: cards in flight when the fault hit, cards done afterwards, cards lost,
    cards whose work committed twice (agent ledger), agent processes left over, seconds to recover."""
    row = {"scenario": scenario, "in_flight": in_flight, "done": done, "lost": lost, "run_twice": run_twice,
           "orphans": orphans, "recover_s": round(recover_s, 2), "note": note, "at": time.time()}
    print(f"\nfigures {json.dumps(row)}")
    target = os.environ.get(FIGURES_ENV)
    if target:
        with Path(target).open("a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")
