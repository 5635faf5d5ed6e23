#!/usr/bin/env python3
"""Fake Claude Code for retries: prints its argv on stderr, then replays a recorded stream-json sample:
the rate-limit one (is_error, exit 0) on attempt 1, the successful one on later attempts."""

import json
import os
import sys
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent / "samples"
print("argv: " + json.dumps(sys.argv[1:]), file=sys.stderr, flush=True)
sample = "rate_limit.jsonl" if os.environ.get("SQUAD_ATTEMPT") == "1" else "success.jsonl"
sys.stdout.write((SAMPLES / sample).read_text(encoding="utf-8"))
sys.stdout.flush()
