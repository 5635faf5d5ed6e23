#!/usr/bin/env python3
"""Fake agent trying the network from inside a sandbox with `network = "allow"`: `net_probe.py SPEC_JSON`.

SPEC_JSON: {"through_proxy": {name: port}, "direct": {name: port}} (loopback ports of the machine).
Each `through_proxy` target is fetched twice through `HTTP_PROXY` (the sandbox's egress bridge):
as an absolute-form request (`GET http://127.0.0.1:PORT/`) and through a CONNECT tunnel; each
`direct` one is a plain TCP connect. Results go to `net.json` in the working directory ("ALLOWED:
<status> <body>" or "refused (...)"); the agent always exits 0.
"""

import http.client
import json
import os
import socket
import sys
from urllib.parse import urlsplit

spec = json.loads(sys.argv[1])
results: dict[str, str] = {"HTTP_PROXY": os.environ.get("HTTP_PROXY", ""),
                           "HTTPS_PROXY": os.environ.get("HTTPS_PROXY", "")}
proxy = urlsplit(os.environ.get("HTTP_PROXY", "http://127.0.0.1:9"))


def fetch(port: int, tunnel: bool) -> str:
    conn = http.client.HTTPConnection(proxy.hostname, proxy.port, timeout=10)
    try:
        if tunnel:
            conn.set_tunnel("127.0.0.1", port)
            conn.request("GET", "/")
        else:
            conn.request("GET", f"http://127.0.0.1:{port}/")
        response = conn.getresponse()
        body = response.read().decode(errors="replace").strip()
    finally:
        conn.close()
    if response.status != 200:
        raise PermissionError(f"{response.status} {body[:80]}")
    return f"ALLOWED: {response.status} {body[:80]}"


for name, port in spec.get("through_proxy", {}).items():
    for how, tunnel in (("http", False), ("connect", True)):
        try:
            results[f"{how} {name}"] = fetch(port, tunnel)
        except Exception as exc:
            results[f"{how} {name}"] = f"refused ({type(exc).__name__}: {str(exc)[:80]})"
for name, port in spec.get("direct", {}).items():
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        results[f"direct {name}"] = "ALLOWED"
    except OSError as exc:
        results[f"direct {name}"] = f"refused ({type(exc).__name__})"
with open("net.json", "w", encoding="utf-8") as handle:
    json.dump(results, handle, indent=1)
print(json.dumps(results), flush=True)
