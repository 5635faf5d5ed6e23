#!/usr/bin/env python3
"""Fake agent silent for argv[1] seconds (default 2), then prints a line and exits 0."""

import sys
import time

time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 2.0)
print("finally done", flush=True)
