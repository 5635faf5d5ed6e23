"""The tests' own process helpers (tests/support/processes.py), against real processes: a helper that
misreads a process makes a product test fail for nothing (a cancel storm once took a running agent for
gone)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from support.processes import alive, host_pid, kill_tree, wait_for

# Writes its pid, then execs itself $1 more times (the same pid throughout), then sleeps.
EXECS = ('echo $$ > "$2.tmp" && mv "$2.tmp" "$2"; '
         '[ "$1" -gt 0 ] && exec /bin/sh "$0" $(($1 - 1)) "$2.again"; exec sleep 60')


def test_host_pid_finds_an_agent_while_it_execs(tmp_path: Path) -> None:
    # Given an agent that execs itself again and again under the same pid, with its card in its environment
    script = tmp_path / "execs.sh"
    script.write_text(EXECS + "\n", encoding="utf-8")
    pid_file = tmp_path / "agent.pid"
    proc = subprocess.Popen(["/bin/sh", str(script), "400", str(pid_file)],
                            env={"PATH": os.environ["PATH"], "SQUAD_CARD_ID": "EXEC-1"})
    try:
        wait_for(pid_file.exists, 30, interval=0.001, message="pid written")
        inner = int(pid_file.read_text())
        # When it is looked up by its pid and card while it execs
        misses = [found for found in (host_pid(inner, env={"SQUAD_CARD_ID": "EXEC-1"}) for _ in range(150))
                  if found != proc.pid]
        # Expect it found every time (its environment reads empty in the instant it execs)
        assert misses == [] and alive(proc.pid)
    finally:
        kill_tree(proc)
