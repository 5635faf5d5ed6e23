#!/usr/bin/env python3
"""Fake agent showing what it was given: SQUAD_* env, argv, cwd and the size of stdin."""

import json
import os
import sys

data = sys.stdin.buffer.read()
print(json.dumps({
    "SQUAD_CARD_ID": os.environ.get("SQUAD_CARD_ID"),
    "SQUAD_ATTEMPT": os.environ.get("SQUAD_ATTEMPT"),
    "SQUAD_TASK_ID": os.environ.get("SQUAD_TASK_ID"),
    "MY_FLAG": os.environ.get("MY_FLAG"),
    "argv": sys.argv[1:],
    "cwd": os.getcwd(),
    "stdin_len": len(data),
}), flush=True)
