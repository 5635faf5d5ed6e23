#!/usr/bin/env python3
"""Fake agent: writes its pid to argv[1], then prints a line every 0.5 s for a while and exits 0.

argv: PIDFILE FIRST_S [LATER_S]: runs FIRST_S seconds on attempt 1 (env SQUAD_ATTEMPT), LATER_S
(default FIRST_S) on later attempts. Tests put `{attempt}` in PIDFILE to tell attempts apart.
"""

import os
import sys
import time

pidfile = sys.argv[1]
first = float(sys.argv[2])
later = float(sys.argv[3]) if len(sys.argv) > 3 else first
duration = first if os.environ.get("SQUAD_ATTEMPT", "1") == "1" else later
with open(pidfile + ".tmp", "w") as out:
    out.write(str(os.getpid()))
os.replace(pidfile + ".tmp", pidfile)
deadline = time.monotonic() + duration
tick = 0
while time.monotonic() < deadline:
    tick += 1
    print(f"working, tick {tick}", flush=True)
    time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
print("finished", flush=True)
