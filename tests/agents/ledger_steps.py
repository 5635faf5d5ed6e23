#!/usr/bin/env python3
"""Fake agent that keeps its own ledger of executions, independent of the squad store.

argv: LEDGER STEPS STEP_S [FAIL_FIRST]: appends `start <card> <attempt> <pid>` to LEDGER, works
STEPS steps of STEP_S seconds each (one output line per step, `::progress` markers), then appends
`commit <card> <attempt> <pid>` and exits 0. With FAIL_FIRST=1 the first attempt exits 1 before
committing. Each ledger line is one O_APPEND write, so concurrent agents never interleave.
"""

import os
import sys
import time

ledger, steps, step_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
fail_first = len(sys.argv) > 4 and sys.argv[4] == "1"
card = os.environ.get("SQUAD_CARD_ID", "?")
attempt = os.environ.get("SQUAD_ATTEMPT", "1")


def note(word: str) -> None:
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{word} {card} {attempt} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


note("start")
for step in range(1, steps + 1):
    # Sleeping step by step (not to a deadline): a frozen and resumed agent still has work left.
    time.sleep(step_s)
    print(f"::progress {int(step * 100 / (steps + 1))} step {step}", flush=True)
if fail_first and attempt == "1":
    print("failing on purpose", file=sys.stderr, flush=True)
    sys.exit(1)
note("commit")
print("finished", flush=True)
