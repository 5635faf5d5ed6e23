#!/usr/bin/env python3
"""Fake agent: progress markers and keyword lines, then exit 0 (optional argv[1]: pause per line)."""

import sys
import time

pause = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
for line in [
    "::progress 45 analysing",
    "reading src/app.py",
    "::progress 40 going backwards is ignored",
    "writing src/app.py",
    "::progress 90 running tests",
    "all good",
]:
    print(line, flush=True)
    time.sleep(pause)
print("a warning on stderr", file=sys.stderr, flush=True)
