#!/usr/bin/env python3
"""Fake agent trying, from inside its sandbox, what it must not do: `sandbox_probe.py SPEC_JSON`.

SPEC_JSON names the targets (store file, config, another card's folder, a fake ssh key, a path
outside the card's folder, a process of the machine, a file in its folder holding the worker's pid,
loopback ports, fork and memory sizes). Each try is recorded in `probe.json` in the working directory
as "refused" or what it got. What it may do is recorded there too, under names starting "own ", as
"ok" or why not: write `mine.txt` in its folder, run `python -m pytest` on a test it writes there
(`pytest`), `pip install --target` a wheel of its folder into it, offline (`wheel`). It exits 0.
"""

import json
import os
import signal
import socket
import subprocess
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
if spec.get("readable"):
    attempt("write a folder it may read", lambda: Path(spec["readable"]).write_text("x"))
if spec.get("victim_pid"):
    attempt("signal a process of the machine", lambda: os.kill(spec["victim_pid"], signal.SIGKILL))
if spec.get("worker_pid_file"):
    attempt("signal the worker", lambda: os.kill(int(Path(spec["worker_pid_file"]).read_text()), signal.SIGKILL))
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


def own(name: str, argv: list[str]) -> None:
    """Something the agent may do in its own folder: "ok", or its exit code and output's tail."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
    results[f"own {name}"] = "ok" if done.returncode == 0 else f"exit {done.returncode}: {' | '.join(tail)}"


if spec.get("pytest"):
    Path("test_inside.py").write_text("def test_inside():\n    assert 1 + 1 == 2\n")
    own("python -m pytest", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_inside.py"])
if spec.get("wheel"):
    own("pip install --target", [sys.executable, "-m", "pip", "install", "-q", "--no-index",
                                 "--disable-pip-version-check", "--target", "vendor", spec["wheel"]])
    if results["own pip install --target"] == "ok":
        own("import what pip installed", [sys.executable, "-c", "import sys; sys.path.insert(0, 'vendor');"
                                          " import squadprobe; assert squadprobe.VALUE == 42"])
results["visible processes"] = str(sum(1 for e in os.listdir("/proc") if e.isdigit()))
with open("mine.txt", "w", encoding="utf-8") as handle:
    handle.write("the agent's own work\n")
with open("probe.json", "w", encoding="utf-8") as handle:
    json.dump(results, handle, indent=1)
print(json.dumps(results), flush=True)
sys.exit(0)
