#!/usr/bin/env python3
"""Fake agent printing what a prompt-injected agent could: terminal escapes, Rich markup, hostile JSON.

`hostile.py terminal` prints control sequences and markup; `hostile.py json` prints Claude-style
stream-json events with numbers and session ids no parser should trust, then a successful result;
`hostile.py markup GATE TEXT` reports TEXT (HTML, say) as its step and waits for the file GATE.
"""

import sys

mode = sys.argv[1] if len(sys.argv) > 1 else "terminal"
out = sys.stdout
if mode == "markup":  # hostile.py markup GATE TEXT: TEXT as its progress step, then wait (≤ 300 s) for GATE
    import time
    from pathlib import Path

    out.write(f"::progress 50 {sys.argv[3]}\n")
    out.write(f"a log line carrying it too: {sys.argv[3]}\n")
    out.flush()
    deadline = time.monotonic() + 300
    while not Path(sys.argv[2]).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    sys.exit(0)
if mode == "terminal":
    out.write("\x1b]0;pwned-title\x07clear next\x1b[2J\x1b[H\n")
    out.write("c1 csi \x9b31m red \x1b[0m and bel \x07\n")
    out.write("::progress 50 [/]\n")
    out.write("::progress 60 [bold red]markup[/] \x1b[5m\n")
    out.write("[link=http://evil]click[/link] :skull:\n")
    out.flush()
    sys.exit(0)
deep = "[" * 100_000 + "]" * 100_000
out.write('{"type": "system", "subtype": "init", "session_id": "-rf --evil option", "cwd": "/"}\n')
out.write(deep[:60_000] + "\n")  # nested far deeper than Python's recursion limit (and cut at 64 KiB)
out.write('{"type": "assistant", "message": {"content": [{"type": "text", "text": "' + "x" * 200 + '"}]}}\n')
out.write('{"type": "system", "subtype": "note", "session_id": "' + "s" * 10_000 + '"}\n')
out.write('{"type": "result", "subtype": "success", "is_error": false, "result": "done",'
          ' "session_id": "sess with spaces", "total_cost_usd": -5, "num_turns": Infinity,'
          ' "usage": {"input_tokens": 1e400, "output_tokens": NaN}}\n')
out.flush()
