#!/usr/bin/env python3
"""Fake agent leaving a daemon behind: fork, setsid, fork again, the middle process exits at once.

The daemon is in its own session (no group of the agent's), its parent is gone, it ignores SIGTERM
and lets go of the agent's pipes: no group kill, process-tree walk or pipe-holder scan finds it.
Only a subreaper sees it.

argv: PIDFILE MODE [--clear-env]
  MODE "exit": exit 0 once the daemon is ready; "sleep": then sleep forever printing nothing.
  --clear-env: the daemon re-executes itself with an empty environment (it carries no task id).
"""

import os
import signal
import sys
import time

DAEMON = (
    "import os, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "null = os.open(os.devnull, os.O_RDWR)\n"
    "for fd in (0, 1, 2):\n"
    "    os.dup2(null, fd)\n"
    "path = sys.argv[1]\n"
    "open(path + '.tmp', 'w').write(str(os.getpid()))\n"
    "os.replace(path + '.tmp', path)\n"
    "while True:\n"
    "    time.sleep(3600)\n"
)
pidfile, mode = sys.argv[1], sys.argv[2]
clear_env = "--clear-env" in sys.argv[3:]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execve(sys.executable, [sys.executable, "-c", DAEMON, pidfile], {} if clear_env else dict(os.environ))
    os._exit(0)
os.wait()
deadline = time.monotonic() + 10
while not os.path.exists(pidfile) and time.monotonic() < deadline:
    time.sleep(0.01)
print("daemon ready", flush=True)
if mode == "sleep":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(3600)
sys.exit(0)
