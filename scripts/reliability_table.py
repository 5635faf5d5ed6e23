#!/usr/bin/env python3
"""Regenerate the measured table of docs/reliability.md from the chaos suite's figures.

The chaos tests append one JSON line per run to the file named by RELIABILITY_FIGURES
(tests/support/reliability.py). This script keeps, for every scenario, the worst figure of all its runs
(fewest cards done; most lost, run twice, orphans; longest time to recover) and rewrites the part
of docs/reliability.md between the `figures:start` and `figures:end` markers.

    RELIABILITY_FIGURES=docs/reliability-figures.jsonl pytest tests/chaos   # 3 times
    python3 scripts/reliability_table.py docs/reliability-figures.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"


def worst(rows: list[dict[str, object]]) -> dict[str, object]:
    """The worst of several runs of one scenario, figure by figure."""
    def nums(key: str) -> list[float]:
        return [float(r[key]) for r in rows]  # type: ignore[arg-type]

    slowest = max(rows, key=lambda r: float(r["recover_s"]))  # type: ignore[arg-type]
    return {"runs": len(rows), "in_flight": int(max(nums("in_flight"))), "done": int(min(nums("done"))),
            "lost": int(max(nums("lost"))), "run_twice": int(max(nums("run_twice"))),
            "orphans": int(max(nums("orphans"))), "recover_s": max(nums("recover_s")), "note": slowest.get("note", "")}


def table(figures: Path) -> str:
    """The Markdown table, one row per scenario in the order first seen."""
    by_scenario: dict[str, list[dict[str, object]]] = {}
    for line in figures.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            by_scenario.setdefault(str(row["scenario"]), []).append(row)
    out = ["| Fault | Runs | Cards in flight | Done | Lost | Run twice | Orphan agents | Time to recover (worst) "
           "| Notes (worst run) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for scenario, rows in by_scenario.items():
        w = worst(rows)
        out.append(f"| {scenario} | {w['runs']} | {w['in_flight']} | {w['done']} | {w['lost']} | {w['run_twice']} "
                   f"| {w['orphans']} | {float(w['recover_s']):.1f} s | {w['note']} |")  # type: ignore[arg-type]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    figures = Path(argv[1]) if len(argv) > 1 else ROOT / "docs" / "reliability-figures.jsonl"
    if not figures.exists():
        print(f"reliability_table: no figures file {figures}", file=sys.stderr)
        return 2
    text = DOC.read_text(encoding="utf-8")
    if START not in text or END not in text:
        print(f"reliability_table: {DOC} lacks the {START} / {END} markers", file=sys.stderr)
        return 2
    head, rest = text.split(START, 1)
    _old, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{table(figures)}\n{END}{tail}", encoding="utf-8")
    print(f"{DOC.relative_to(ROOT)}: table rewritten from {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
