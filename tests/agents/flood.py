#!/usr/bin/env python3
"""Fake agent flooding its output: MB megabytes of 1 KiB lines on stdout, one LINE_MB megabyte line,
then binary garbage (NUL bytes, invalid UTF-8, escape sequences), then `flood done`, exit 0.

argv: MB LINE_MB
"""

import os
import sys

total_mb, line_mb = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout.buffer
print("flood starting", flush=True)
line = b"x" * 1023 + b"\n"
block = line * 1024  # 1 MiB
for _ in range(total_mb):
    out.write(block)
chunk = b"y" * (1024 * 1024)
for _ in range(line_mb):
    out.write(chunk)  # no newline: one giant line
out.write(b"\n")
out.write(os.urandom(256 * 1024) + b"\x00\xff\xfe\x1b[2J\x1b]0;title\x07\n")
out.flush()
print("flood done", flush=True)
