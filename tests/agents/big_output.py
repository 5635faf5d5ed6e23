#!/usr/bin/env python3
"""Fake agent printing ~10 MB: 50,000 lines of 100 bytes, one 5 MB line, then a last short line."""

import sys

out = sys.stdout.buffer
line = b"x" * 99 + b"\n"
for _ in range(25_000):
    out.write(line)
out.write(b"B" * (5 * 1024 * 1024) + b"\n")
for _ in range(25_000):
    out.write(line)
out.write(b"last line\n")
out.flush()
