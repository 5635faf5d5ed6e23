"""Where the repository's parts are, so a test finds them wherever it sits in tests/."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
DOCS = ROOT / "docs"
#: The fake agents, run by path as subprocesses (tests/agents/).
AGENTS = ROOT / "tests" / "agents"
#: Recorded output of the real agent tools, for the parsers' tests.
SAMPLES = AGENTS / "samples"
