#!/usr/bin/env python3
"""Fake agent (or hook) recording what it was given: `probe.py OUT_JSON [PROMPT_FILE] [EXIT_CODE]`.

Writes its whole environment, cwd, what it could read of its ancestors' environments
(/proc/<pid>/environ up the parent chain) and, when given, the prompt file's mode to OUT_JSON.
"""

import json
import os
import stat
import sys


def ancestors() -> list[dict[str, object]]:
    """Each ancestor's pid, command line and environment as this process can read it (None: refused)."""
    found: list[dict[str, object]] = []
    pid = os.getppid()
    while pid > 1 and len(found) < 20:
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ: str | None = handle.read().decode(errors="replace")
        except OSError:
            environ = None
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")[:200]
        except OSError:
            cmdline = "?"
        found.append({"pid": pid, "cmdline": cmdline, "environ": environ})
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            break
        pid = int(stat[stat.rfind(b")") + 2:].split()[1])
    return found


out = {"env": dict(os.environ), "cwd": os.getcwd(), "ancestors": ancestors()}
if len(sys.argv) > 2 and sys.argv[2]:
    st = os.stat(sys.argv[2])
    out["prompt_file"] = sys.argv[2]
    out["prompt_mode"] = oct(stat.S_IMODE(st.st_mode))
    out["prompt_dir_mode"] = oct(stat.S_IMODE(os.stat(os.path.dirname(sys.argv[2])).st_mode))
with open(sys.argv[1], "w", encoding="utf-8") as handle:
    json.dump(out, handle)
print("probe done", flush=True)
sys.exit(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
