#!/usr/bin/env python3
"""A verify command for the landing tests. argv: MARK_DIR NAME [WAIT_FOR].

In a card's own worktree it passes at once. On a landing's result (cwd under `.landing/`) it appends
"start <card> <time>" to MARK_DIR/<NAME>.log, creates MARK_DIR/<NAME>-started, waits (bounded) until
MARK_DIR/<WAIT_FOR> exists when WAIT_FOR is given, then appends "end <card> <time>" and passes."""

import os
import sys
import time

mark_dir, name = sys.argv[1], sys.argv[2]
wait_for = sys.argv[3] if len(sys.argv) > 3 else None
if "/.landing/" not in os.getcwd():
    sys.exit(0)
card = os.environ.get("SQUAD_CARD_ID", "?")
log = os.path.join(mark_dir, f"{name}.log")
with open(log, "a", encoding="utf-8") as fh:
    fh.write(f"start {card} {time.time()}\n")
with open(os.path.join(mark_dir, f"{name}-started"), "w", encoding="utf-8") as fh:
    fh.write(card)
if wait_for:
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(mark_dir, wait_for)) and time.monotonic() < deadline:
        time.sleep(0.05)
time.sleep(0.2)
with open(log, "a", encoding="utf-8") as fh:
    fh.write(f"end {card} {time.time()}\n")
print(f"landing of {card} verified", flush=True)
