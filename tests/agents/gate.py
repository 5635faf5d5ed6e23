#!/usr/bin/env python3
"""Fake agent: reports rising progress (40 -> 89) every argv[2] seconds (default 0.4) until the
file argv[1] exists, then exits 0. A test decides when the card finishes by creating the file."""

import sys
import time
from pathlib import Path

gate = Path(sys.argv[1])
pause = float(sys.argv[2]) if len(sys.argv) > 2 else 0.4
step = 0
while not gate.exists():
    print(f"::progress {min(89, 40 + step)} working step {step}", flush=True)
    step += 1
    time.sleep(pause)
print("gate open, finishing", flush=True)
