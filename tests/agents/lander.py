#!/usr/bin/env python3
"""Fake coding agent for the landing tests: edits files in its cwd (a card worktree), leaves them
uncommitted, resolves conflict markers when its prompt lists conflicts, and adds a line to each file a
failed verify names (`VERIFY-FAIL <path>:` in its prompt).

argv: MARK_DIR [--shared FILE] [--fail-first] [--sleep S]. Appends "<card_id> attempt N" to
<card_id>.txt; with --shared, writes "<card_id> was here" as the first line of FILE (two cards doing
so conflict). Conflicted files named in the prompt get their markers removed, both sides kept. The
prompt goes to MARK_DIR/<card_id>-<attempt>.prompt, and {cwd, attempt, files} to MARK_DIR/<card_id>-<attempt>.json.
"""

import json
import os
import re
import sys
import time

mark_dir = sys.argv[1]
card = os.environ["SQUAD_CARD_ID"]
attempt = int(os.environ["SQUAD_ATTEMPT"])
prompt = sys.stdin.read()
with open(os.path.join(mark_dir, f"{card}-{attempt}.prompt"), "w", encoding="utf-8") as fh:
    fh.write(prompt)
files = sorted(name for name in os.listdir(".") if not name.startswith("."))
resolved = []
if "## Conflicts with the base branch" in prompt:
    section = prompt.split("## Conflicts with the base branch", 1)[1]
    for path in re.findall(r"^- (.+)$", section, flags=re.M):
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
            kept = [line for line in text.splitlines(keepends=True)
                    if not re.match(r"^(<<<<<<<|=======|>>>>>>>)( |$)", line.rstrip("\n"))]
            with open(path, "w", encoding="utf-8") as fh:
                fh.writelines(kept)
            resolved.append(path)
elif "## Verify failed" in prompt:
    for path in sorted(set(re.findall(r"VERIFY-FAIL (\S+):", prompt))):
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"fixed by {card}\n")
        resolved.append(path)
else:
    with open(f"{card}.txt", "a", encoding="utf-8") as fh:
        fh.write(f"{card} attempt {attempt}\n")
    if "--shared" in sys.argv:
        shared = sys.argv[sys.argv.index("--shared") + 1]
        rest = ""
        if os.path.exists(shared):
            with open(shared, encoding="utf-8") as fh:
                rest = "".join(fh.readlines()[1:])
        with open(shared, "w", encoding="utf-8") as fh:
            fh.write(f"{card} was here\n{rest}")
if "--sleep" in sys.argv:
    time.sleep(float(sys.argv[sys.argv.index("--sleep") + 1]))
with open(os.path.join(mark_dir, f"{card}-{attempt}.json"), "w", encoding="utf-8") as fh:
    json.dump({"cwd": os.getcwd(), "attempt": attempt, "files": files, "resolved": resolved}, fh)
if "--fail-first" in sys.argv and attempt == 1:
    print("failing the first attempt on purpose", file=sys.stderr, flush=True)
    sys.exit(1)
print("done", flush=True)
