#!/usr/bin/env python3
"""Fake Claude Code: replays a recorded stream-json sample (argv[1]) and exits with argv[2] (default 0)."""

import sys
import time

path = sys.argv[1]
code = int(sys.argv[2]) if len(sys.argv) > 2 else 0
pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
with open(path, encoding="utf-8") as sample:
    for line in sample:
        sys.stdout.write(line)
        sys.stdout.flush()
        time.sleep(pause)
sys.exit(code)
