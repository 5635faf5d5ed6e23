#!/usr/bin/env python3
"""Fake agent echoing every stdin line to stdout and stderr while still reading (deadlock bait)."""

import sys

for line in sys.stdin.buffer:
    sys.stdout.buffer.write(line)
    sys.stderr.buffer.write(line)
sys.stdout.flush()
