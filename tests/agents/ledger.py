#!/usr/bin/env python3
"""Fake agent keeping a ledger: appends `start` and, when it finishes, `done` lines to argv[1].

argv: LEDGER SECONDS [RELEASE_FILE]: with a release file, it runs until that file exists (at most
SECONDS), so a test decides when a card ends. Each line: `<event> <card id> <attempt> <pid> <cwd>`,
written with O_APPEND (one write per line), so several agents on several workers can share one ledger file.
A card run exactly once has exactly one `done` line, whatever was killed in between.
"""

import os
import sys
import time


def note(event: str) -> None:
    line = (f"{event} {os.environ.get('SQUAD_CARD_ID', '?')} {os.environ.get('SQUAD_ATTEMPT', '?')} "
            f"{os.getpid()} {os.getcwd()}\n")
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


note("start")
deadline = time.monotonic() + float(sys.argv[2])
release = sys.argv[3] if len(sys.argv) > 3 else None
while time.monotonic() < deadline and not (release and os.path.exists(release)):
    print("::progress 50 working", flush=True)
    time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
note("done")
