#!/usr/bin/env python3
"""Fake agent printing N short lines as fast as it can (benchmarks)."""

import sys

count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
out = sys.stdout
for i in range(count):
    out.write(f"line {i} of {count}: some typical agent output\n")
out.flush()
