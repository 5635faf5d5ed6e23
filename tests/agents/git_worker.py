#!/usr/bin/env python3
"""Fake coding agent for workspace tests: edits files in its cwd (a card worktree) and leaves them
uncommitted, like a real agent.

argv: MARK_DIR [--fail-first] [--sleep S]. Appends "attempt N" to <card_id>.txt, writes the prompt
it got to PROMPT_<attempt>.md, and records {cwd, attempt, start, end, had_file} in
MARK_DIR/<card_id>-<attempt>.json.
"""

import json
import os
import sys
import time

mark_dir = sys.argv[1]
fail_first = "--fail-first" in sys.argv
sleep_s = float(sys.argv[sys.argv.index("--sleep") + 1]) if "--sleep" in sys.argv else 0.0
card = os.environ["SQUAD_CARD_ID"]
attempt = int(os.environ["SQUAD_ATTEMPT"])
start = time.time()
prompt = sys.stdin.read()
had_file = os.path.exists(f"{card}.txt")
print(f"::progress 50 editing {card}.txt", flush=True)
with open(f"{card}.txt", "a", encoding="utf-8") as fh:
    fh.write(f"attempt {attempt}\n")
with open(f"PROMPT_{attempt}.md", "w", encoding="utf-8") as fh:
    fh.write(prompt)
time.sleep(sleep_s)
with open(os.path.join(mark_dir, f"{card}-{attempt}.json"), "w", encoding="utf-8") as fh:
    json.dump({"cwd": os.getcwd(), "attempt": attempt, "start": start, "end": time.time(), "had_file": had_file}, fh)
if fail_first and attempt == 1:
    print("failing the first attempt on purpose", file=sys.stderr, flush=True)
    sys.exit(1)
print("done", flush=True)
