#!/usr/bin/env python3
"""A verify command for the landing tests: passes when every file named on the command line that
exists has at least N lines (argv: N FILE...), else prints what is missing and exits 1. Also fails
while a file named `BROKEN` exists in its cwd."""

import os
import sys

need = int(sys.argv[1])
bad = []
for path in sys.argv[2:]:
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            count = len(fh.readlines())
        if count < need:
            bad.append(f"{path}: {count} line(s), want {need}")
if os.path.exists("BROKEN"):
    bad.append("BROKEN is there")
print(f"checked {len(sys.argv) - 2} file(s)")
for line in bad:
    print(f"VERIFY-FAIL {line}")
sys.exit(1 if bad else 0)
