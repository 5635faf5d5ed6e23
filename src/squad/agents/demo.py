"""The built-in demo agent: looks like a coding agent at work, edits one file, exits.

It lets `squad up --demo` and the tests show real progress, logs, retries and timeouts without an
AI tool installed. Controlled by env (`SQUAD_DEMO_DURATION`, `SQUAD_DEMO_FAIL`, `SQUAD_DEMO_SLOW`)
or the mirroring flags `--duration S --fail --fail-first --slow`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_DURATION_S = 6.0
OUTPUT_FILE = "SQUAD_DEMO.md"

# (progress, step, stdout lines, stderr lines): one entry per phase of a pretend coding session.
_PHASES: list[tuple[int, str, list[str], list[str]]] = [
    (35, "understanding the card", ["reading src/app.py", "reading tests/test_app.py"], []),
    (50, "planning the change", ["plan: add the feature behind a flag, then cover it with a test"], []),
    (65, "editing code", ["writing src/app.py"], ["warning: src/app.py has no type hints, adding some"]),
    (80, "running tests", ["$ pytest -q", "4 passed in 0.12s"], ["warning: 1 deprecation warning in tests"]),
    (95, "summarising", [f"writing {OUTPUT_FILE}"], []),
]


def _read_prompt() -> str:
    """The prompt from stdin when one is piped; never waits on a terminal."""
    if sys.stdin is None or sys.stdin.closed or sys.stdin.isatty():
        return ""
    try:
        return sys.stdin.read()
    except (OSError, ValueError):
        return ""


def _options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m squad.agents.demo", description=__doc__)
    parser.add_argument("--duration", type=float,
                        default=float(os.environ.get("SQUAD_DEMO_DURATION", DEFAULT_DURATION_S)))
    parser.add_argument("--fail", action="store_true", default=os.environ.get("SQUAD_DEMO_FAIL") == "1")
    parser.add_argument("--fail-first", action="store_true",
                        default=os.environ.get("SQUAD_DEMO_FAIL") == "first")
    parser.add_argument("--slow", action="store_true", default=os.environ.get("SQUAD_DEMO_SLOW") == "1")
    return parser.parse_args(argv)


def _say(line: str, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(line + "\n")
    stream.flush()


def main(argv: list[str] | None = None) -> int:
    """Run the pretend session; the exit code is the agent's verdict."""
    opts = _options(argv)
    card_id = os.environ.get("SQUAD_CARD_ID", "demo")
    attempt = os.environ.get("SQUAD_ATTEMPT", "1")
    prompt = _read_prompt()
    _say(f"demo agent: card {card_id}, attempt {attempt}, prompt of {len(prompt)} characters")
    if opts.slow:
        _say("::progress 32 thinking very hard")
        while True:  # for timeout tests: silent until killed
            time.sleep(3600)
    pause = max(0.0, opts.duration) / len(_PHASES)
    for progress, step, lines, warnings in _PHASES:
        _say(f"::progress {progress} {step}")
        for line in lines:
            _say(line)
        for warning in warnings:
            _say(warning, err=True)
        time.sleep(pause)
    if opts.fail or (opts.fail_first and attempt == "1"):
        _say(f"error: tests failed for card {card_id} (attempt {attempt})", err=True)
        return 1
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    with Path(OUTPUT_FILE).open("a", encoding="utf-8") as out:
        out.write(f"- {stamp} card {card_id}, attempt {attempt}: done ({len(prompt)} characters of prompt)\n")
    _say(f"done: updated {OUTPUT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
