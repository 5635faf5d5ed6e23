#!/usr/bin/env python3
"""Fake agent printing `argv[1]` lines of `argv[2]` bytes each (a log that is big in bytes, not lines)."""

import sys

count, width = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout.buffer
for n in range(count):
    out.write(b"%08d " % n + b"w" * (width - 9) + b"\n")
out.flush()
