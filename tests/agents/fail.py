#!/usr/bin/env python3
"""Fake agent: complains on stderr and exits 3."""

import sys

print("starting", flush=True)
print("fatal: something broke", file=sys.stderr, flush=True)
sys.exit(3)
