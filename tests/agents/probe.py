#!/usr/bin/env python3
"""Fake agent (or hook) recording what it was given: `probe.py OUT_JSON [PROMPT_FILE] [EXIT_CODE]`.

Writes its whole environment, cwd and, when given, the prompt file's mode to OUT_JSON.
"""

import json
import os
import stat
import sys

out = {"env": dict(os.environ), "cwd": os.getcwd()}
if len(sys.argv) > 2 and sys.argv[2]:
    st = os.stat(sys.argv[2])
    out["prompt_file"] = sys.argv[2]
    out["prompt_mode"] = oct(stat.S_IMODE(st.st_mode))
    out["prompt_dir_mode"] = oct(stat.S_IMODE(os.stat(os.path.dirname(sys.argv[2])).st_mode))
with open(sys.argv[1], "w", encoding="utf-8") as handle:
    json.dump(out, handle)
print("probe done", flush=True)
sys.exit(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
