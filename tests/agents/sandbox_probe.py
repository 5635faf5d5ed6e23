#!/usr/bin/env python3
"""Fake agent trying, from inside its sandbox, what it must not do: `sandbox_probe.py SPEC_JSON`.

SPEC_JSON names the targets (store file, config, another card's folder, a fake ssh key, a path
outside the card's folder, a process of the machine, loopback ports, fork and memory sizes). Each try
is recorded in `probe.json` in the working directory as "refused" or what it got; the agent also
writes `mine.txt` there (what it may do) and exits 0.
"""

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

spec = json.loads(sys.argv[1])
results: dict[str, str] = {}


def attempt(name: str, action) -> None:
    try:
        got = action()
        results[name] = f"ALLOWED: {str(got)[:80]}"
    except Exception as exc:
        results[name] = f"refused ({type(exc).__name__})"


for name in ("store", "config", "other_card", "ssh_key"):
    if spec.get(name):
        attempt(f"read {name}", lambda path=spec[name]: Path(path).read_bytes()[:64])
if spec.get("outside"):
    attempt("write outside", lambda: Path(spec["outside"]).write_text("x"))
if spec.get("victim_pid"):
    attempt("signal a process of the machine", lambda: os.kill(spec["victim_pid"], signal.SIGKILL))
for name, port in spec.get("ports", {}).items():
    attempt(f"connect {name}", lambda port=port: socket.create_connection(("127.0.0.1", port), timeout=2).close())
if spec.get("forks"):
    def fork_bomb() -> int:
        children = []
        try:
            for _ in range(spec["forks"]):
                pid = os.fork()
                if pid == 0:
                    time.sleep(30)
                    os._exit(0)
                children.append(pid)
        finally:
            for pid in children:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        return len(children)

    attempt(f"fork {spec['forks']} processes", fork_bomb)
if spec.get("memory_mb"):
    def hog() -> int:
        pid = os.fork()
        if pid == 0:
            try:
                block = bytearray(spec["memory_mb"] * 1024 * 1024)
                for i in range(0, len(block), 4096):
                    block[i] = 1
            except MemoryError:
                os._exit(3)
            os._exit(0)
        _pid, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise MemoryError(f"hog ended with {os.waitstatus_to_exitcode(status)}")
        return spec["memory_mb"]

    attempt(f"allocate {spec['memory_mb']} MB", hog)
results["visible processes"] = str(sum(1 for e in os.listdir("/proc") if e.isdigit()))
with open("mine.txt", "w", encoding="utf-8") as handle:
    handle.write("the agent's own work\n")
with open("probe.json", "w", encoding="utf-8") as handle:
    json.dump(results, handle, indent=1)
print(json.dumps(results), flush=True)
sys.exit(0)
