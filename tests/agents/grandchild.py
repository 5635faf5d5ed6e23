#!/usr/bin/env python3
"""Fake agent leaving a grandchild behind that ignores SIGTERM and holds the output pipes.

argv: PIDFILE MODE [--setsid] [--ignore-term]
  MODE "exit": exit 0 once the grandchild is ready; "sleep": then sleep forever printing nothing;
  "wait2": sleep 2 s then exit 0 (long enough for the runner to record the tree).
  --setsid: the grandchild leaves the agent's process group; --ignore-term: so does this agent.
This agent's own pid goes to PIDFILE.agent (tests check that it is gone too).
"""

import os
import signal
import subprocess
import sys
import time

pidfile, mode = sys.argv[1], sys.argv[2]
with open(pidfile + ".agent.tmp", "w") as own:
    own.write(str(os.getpid()))
os.replace(pidfile + ".agent.tmp", pidfile + ".agent")
flags = sys.argv[3:]
if "--ignore-term" in flags:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
GRANDCHILD = (
    "import os, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "path = sys.argv[1]\n"
    "open(path + '.tmp', 'w').write(str(os.getpid()))\n"
    "os.replace(path + '.tmp', path)\n"
    "while True:\n"
    "    time.sleep(3600)\n"
)
subprocess.Popen([sys.executable, "-c", GRANDCHILD, pidfile], start_new_session="--setsid" in flags)
deadline = time.monotonic() + 10
while not os.path.exists(pidfile) and time.monotonic() < deadline:
    time.sleep(0.01)
print("grandchild ready", flush=True)
if mode == "sleep":
    while True:
        time.sleep(3600)
elif mode == "wait2":
    time.sleep(2)
sys.exit(0)
