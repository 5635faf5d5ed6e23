"""`[sandbox] network = "allow"` (docs/security.md): the attempt's only way out is its egress proxy,
which lets `allow_hosts` through and refuses (and logs on the card) the rest. Real `squad
orchestrate` in local mode, real bwrap, real HTTP servers and sockets on loopback; the proxy's own
tests talk to it on its Unix socket."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from squad.agents import egress
from squad.agents.egress import EgressProxy
from squad.agents.sandbox import build
from squad.core.cards import CardSpec
from squad.core.hostpatterns import parse_pattern
from squad.core.settings import SandboxConfig
from squad.core.statuses import Status
from squad.store.card_store import CardStore
from support.cli import run_cli, squad_env
from support.paths import AGENTS, SRC
from support.processes import wait_for
from support.sandboxed import project
from support.workers import Worker

PY = sys.executable
PROBE = str(AGENTS / "net_probe.py")
ORCHESTRATE = ["orchestrate", "--mode", "local", "--once", "--wait", "--interval", "0.2"]
READABLE = json.dumps([str(AGENTS), str(SRC)])


class _Site(ThreadingHTTPServer):
    """A real HTTP server on loopback answering every GET with its name; counts what it got."""

    daemon_threads = True

    def __init__(self, name: str) -> None:
        self.name, self.hits = name, 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.hits += 1
                body = f"hello from {site.name}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                site.hits += 1
                got = self.rfile.read(int(self.headers["Content-Length"]))
                body = f"{site.name} got {got.decode()}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        site = self
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture
def sites() -> Iterator[tuple[_Site, _Site]]:
    """Two web servers on loopback: one the sandbox may reach, one it may not."""
    made = [_Site("allowed"), _Site("other")]
    threads = [threading.Thread(target=site.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
               for site in made]
    for thread in threads:
        thread.start()
    yield made[0], made[1]
    for site, thread in zip(made, threads, strict=True):
        site.shutdown()
        site.server_close()
        thread.join(5)


#: a hook fetching a URL through the attempt's proxy (what `curl` does with HTTP_PROXY set)
HOOK_FETCH = ("import http.client, os, sys; from urllib.parse import urlsplit; "
              "p = urlsplit(os.environ['HTTP_PROXY']); c = http.client.HTTPConnection(p.hostname, p.port, timeout=10); "
              "c.request('GET', sys.argv[1]); open('hook_fetch.txt', 'w').write(c.getresponse().read().decode())")


def test_allow_lets_only_allowed_hosts_through_the_proxy_and_logs_refusals(
        tmp_path: Path, sites: tuple[_Site, _Site]) -> None:
    # Given an allowed web server, another one, a loopback service standing for Redis, and a
    # sandboxed agent (and hook) with network = "allow" for the first server only
    allowed, other = sites
    service = socket.create_server(("127.0.0.1", 0))
    spec = {"through_proxy": {"allowed": allowed.port, "other": other.port},
            "direct": {"allowed": allowed.port, "redis-like service": service.getsockname()[1]}}
    # (the hook's URL is a name the machine's resolver knows, not an address: the proxy resolves it)
    env, store = project(tmp_path, f"""
default_agent = "probe"
[sandbox]
kind = "bwrap"
network = "allow"
allow_hosts = ["127.0.0.1:{allowed.port}", "localhost:{allowed.port}"]
ro_paths = {READABLE}
[agents.probe]
command = ["{PY}", "{PROBE}", {json.dumps(json.dumps(spec))}]
[hooks]
before_run = ["{PY}", "-c", {json.dumps(HOOK_FETCH)}, "http://localhost:{allowed.port}/from-hook"]
""")
    store.add_cards([CardSpec(card_id="ALLOW-1", title="t")])
    # When the card runs
    try:
        res = run_cli(*ORCHESTRATE, env=env)
    finally:
        service.close()
    # Expect the card DONE, the allowed server reached both ways and from the hook, the other one
    # refused with 403 and never contacted, nothing reachable directly
    assert res.returncode == 0, res.stderr
    workdir = tmp_path / "work" / "ALLOW-1"
    results = json.loads((workdir / "net.json").read_text())
    print("NET PROBE", json.dumps(results))
    assert results["HTTP_PROXY"].startswith("http://127.0.0.1:"), results
    assert results["HTTPS_PROXY"] == results["HTTP_PROXY"]
    assert results["http allowed"] == "ALLOWED: 200 hello from allowed", results
    assert results["connect allowed"] == "ALLOWED: 200 hello from allowed", results
    for name in ("http other", "connect other", "direct allowed", "direct redis-like service"):
        assert results[name].startswith("refused"), (name, results)
    assert "403" in results["http other"] and "403" in results["connect other"], results
    assert (workdir / "hook_fetch.txt").read_text() == "hello from allowed"
    assert (allowed.hits, other.hits) == (3, 0)
    assert store.get_card("ALLOW-1").status == Status.DONE
    [run] = store.list_runs("ALLOW-1")
    assert run.sandbox is not None and run.sandbox.startswith(f"bwrap (network allow: 127.0.0.1:{allowed.port}")
    # and each refusal on the card's log, with the proxy's summary
    logs = run_cli("logs", "ALLOW-1", env=env)
    assert logs.returncode == 0, logs.stderr
    refusal = f"sandbox: refused connection to 127.0.0.1:{other.port} (not in allow_hosts)"
    assert logs.stdout.count(refusal) == 2, logs.stdout
    assert "sandbox: egress proxy: 3 connection(s) allowed, 2 refused" in logs.stdout, logs.stdout
    store.dispose()


def test_allow_on_a_celery_worker_and_the_refusal_on_the_live_log(
        tmp_path: Path, redis_url: str, sqlite_url: str, start_worker: Callable[..., Worker],
        sites: tuple[_Site, _Site]) -> None:
    # Given a real worker (its pool process runs the proxy) and the probe with network = "allow"
    allowed, other = sites
    spec = {"through_proxy": {"allowed": allowed.port, "other": other.port}}
    (tmp_path / "squad.toml").write_text(f"""
default_agent = "probe"
[sandbox]
kind = "bwrap"
network = "allow"
allow_hosts = ["127.0.0.1:{allowed.port}"]
ro_paths = {READABLE}
[agents.probe]
command = ["{PY}", "{PROBE}", {json.dumps(json.dumps(spec))}]
""", encoding="utf-8")
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url)
    store = CardStore(sqlite_url)
    store.add_cards([CardSpec(card_id="CEL-1", title="t")])
    start_worker(env, concurrency=1)
    # When
    res = run_cli("orchestrate", "--once", "--wait", "--mode", "celery", "--interval", "0.2", env=env, timeout=150)
    # Expect the allowed server reached, the other refused, and the refusal on the live log (Redis)
    assert res.returncode == 0, res.stderr
    results = json.loads((tmp_path / "work" / "CEL-1" / "net.json").read_text())
    assert results["connect allowed"] == "ALLOWED: 200 hello from allowed", results
    assert "403" in results["connect other"], results
    assert store.get_card("CEL-1").status == Status.DONE
    logs = run_cli("logs", "CEL-1", env=env)
    assert f"sandbox: refused connection to 127.0.0.1:{other.port} (not in allow_hosts)" in logs.stdout, logs.stdout
    store.dispose()


def test_verify_of_an_attempt_gets_the_same_proxy(tmp_path: Path, sites: tuple[_Site, _Site]) -> None:
    # Given a repository and a verify that fetches the allowed server through the proxy
    allowed, _other = sites
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "t@t"], ["config", "user.name", "t"],
                 ["commit", "-q", "--allow-empty", "-m", "root"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    fetch = HOOK_FETCH.replace("open('hook_fetch.txt', 'w').write", "print")
    env, store = project(tmp_path, f"""
default_agent = "writer"
[sandbox]
kind = "bwrap"
network = "allow"
allow_hosts = ["127.0.0.1:{allowed.port}"]
ro_paths = {READABLE}
[workspace]
repo = "{repo}"
verify = ["{PY}", "-c", {json.dumps(fetch)}, "http://127.0.0.1:{allowed.port}/from-verify"]
[agents.writer]
command = ["{PY}", "-c", "open('made.txt', 'w').write('x')"]
""")
    store.add_cards([CardSpec(card_id="VER-1", title="t")])
    # When
    res = run_cli(*ORCHESTRATE, env=env)
    # Expect verify passed with the server's answer
    assert res.returncode == 0, res.stderr
    [run] = store.list_runs("VER-1")
    assert (run.verify_exit, (run.verify_output or "").strip()) == (0, "hello from allowed"), run.verify_output
    store.dispose()


def test_the_runs_sandbox_description_stays_within_its_column(tmp_path: Path) -> None:
    # Given many long allowed names and every limit (runs.sandbox is 255 characters)
    hosts = [f"{'a' * 60}.{'b' * 60}.{'c' * 60}.example{i}.com:443" for i in range(30)]
    config = SandboxConfig(kind="bwrap", network="allow", allow_hosts=hosts, memory_mb=300, pids=60, cpu=1.5)
    # When the sandbox is built
    box = build(config, workdir=tmp_path)
    try:
        # Expect a description that names what fits and counts the rest
        assert box.description.startswith("bwrap (network allow: 30 hosts"), box.description
        assert len(box.description) <= 255, box.description
    finally:
        box.close()
    few = build(config.model_copy(update={"allow_hosts": ["api.example.com", "*.example.org:443"]}), workdir=tmp_path)
    few.close()
    assert few.description.startswith("bwrap (network allow: api.example.com, *.example.org:443, memory"), \
        few.description


def test_a_bad_allow_hosts_pattern_is_a_config_error(tmp_path: Path) -> None:
    # Given a pattern with a scheme
    env, store = project(tmp_path, """
[sandbox]
network = "allow"
allow_hosts = ["https://api.example.com/"]
""")
    store.dispose()
    # When any command reads the config
    res = run_cli("card", "list", env=env)
    # Expect one line saying which key and why, exit 2
    assert res.returncode == 2, res.stdout + res.stderr
    assert "sandbox.allow_hosts" in res.stderr and "no scheme" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.stderr


# ---- the proxy alone, on its Unix socket -------------------------------------------------------
def _ask(path: Path, request: bytes) -> tuple[socket.socket, bytes]:
    """Send `request` on the proxy's socket; the connection and the first bytes of its answer."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(10)
    conn.connect(str(path))
    conn.sendall(request)
    return conn, conn.recv(65536)


def test_the_proxy_answers_bad_requests_and_ends_with_its_attempt(tmp_path: Path, sites: tuple[_Site, _Site]) -> None:
    # Given a proxy allowing one server, a tunnel open through it and a client that says nothing
    allowed, _other = sites
    lines: list[tuple[str, str]] = []
    proxy = EgressProxy([parse_pattern(f"127.0.0.1:{allowed.port}")], lambda level, msg: lines.append((level, msg)))
    folder = proxy.start()
    assert folder.stat().st_mode & 0o077 == 0  # the worker's alone
    try:
        connect = f"CONNECT 127.0.0.1:{allowed.port} HTTP/1.1\r\nHost: x\r\n\r\n"
        tunnel, answer = _ask(proxy.socket_path, connect.encode())
        assert answer.startswith(b"HTTP/1.1 200"), answer
        tunnel.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while not got.endswith(b"hello from allowed"):  # the head and the body may come apart
            more = tunnel.recv(65536)
            assert more, got
            got += more
        # a plain http request with a body goes on to the server, and its answer comes back
        post, answer = _ask(proxy.socket_path, f"POST http://127.0.0.1:{allowed.port}/x HTTP/1.1\r\nHost: x\r\n"
                                               "Content-Length: 5\r\n\r\nhello".encode())
        while not answer.endswith(b"allowed got hello"):
            more = post.recv(65536)
            assert more, answer
            answer += more
        assert answer.startswith(b"HTTP/1.0 200") or answer.startswith(b"HTTP/1.1 200"), answer
        post.close()
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        silent.settimeout(10)
        silent.connect(str(proxy.socket_path))
        # bad requests get a status and a reason, never a hang
        for request, status in ((b"GET /relative HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
                                (b"CONNECT 127.0.0.1 HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
                                (b"GET https://127.0.0.1/ HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
                                (b"not http at all\r\n\r\n", b"400"),
                                (b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", b"403")):
            conn, answer = _ask(proxy.socket_path, request)
            conn.close()
            assert answer.split(b" ")[1] == status, (request, answer)
    finally:
        # When the attempt ends
        proxy.close()
    # Expect the open tunnel and the silent client ended, the thread gone, the folder removed
    assert tunnel.recv(65536) == b""
    assert silent.recv(65536) == b""
    assert not any(t.name.startswith("squad-egress") for t in threading.enumerate())
    assert not folder.exists()
    assert ("WARNING", "sandbox: refused connection to evil.example:443 (not in allow_hosts)") in lines
    assert lines[-1] == ("INFO", "sandbox: egress proxy: 2 connection(s) allowed, 1 refused")
    tunnel.close()
    silent.close()


def test_a_worker_killed_while_its_proxy_serves_leaves_a_folder_the_next_pool_process_removes(
        tmp_path: Path, redis_url: str, sqlite_url: str, start_worker: Callable[..., Worker],
        monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    # Given a real worker whose temporary directory holds, besides what it makes: the folder of a
    # live proxy (this process's) and one named after a gone process but locked (a live owner in
    # another PID namespace sharing the directory)
    tmp = Path(tempfile.mkdtemp(prefix="sq-"))  # short: a Unix socket's path has at most 107 bytes
    request.addfinalizer(lambda: shutil.rmtree(tmp, ignore_errors=True))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    live = EgressProxy([])
    live_folder = live.start()
    gone = subprocess.Popen([PY, "-c", "pass"])
    gone.wait()
    foreign = tmp / f"{egress.FOLDER_PREFIX}{gone.pid}-abc123"
    foreign.mkdir(mode=0o700)
    held = egress._lock(foreign)
    (tmp_path / "squad.toml").write_text(f"""
default_agent = "sleeper"
[sandbox]
kind = "bwrap"
network = "allow"
[agents.sleeper]
command = ["{PY}", "-c", "import time; time.sleep(120)"]
""", encoding="utf-8")
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url, SQUAD_MAX_RETRIES="0", TMPDIR=str(tmp))
    store = CardStore(sqlite_url)
    store.add_cards([CardSpec(card_id="KILL-1", title="t")])
    worker = start_worker(env, concurrency=1)
    orchestrate = subprocess.Popen([PY, "-m", "squad", "orchestrate", "--once", "--mode", "celery"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        orchestrate.wait(120)

        def made() -> list[Path]:
            return [p for p in tmp.glob(egress.FOLDER_PREFIX + "*") if p not in (live_folder, foreign)]

        wait_for(made, 120, message="the attempt's proxy folder")
        [folder] = made()
        pool_pid = int(folder.name.removeprefix(egress.FOLDER_PREFIX).split("-")[0])
        assert pool_pid in [p.pid for p in psutil.Process(worker.proc.pid).children(recursive=True)], folder
        assert (folder / egress.SOCKET_NAME).exists()
        # When its pool process is SIGKILLed (Celery starts another one)
        os.kill(pool_pid, signal.SIGKILL)
        # Expect its folder removed by the next pool process, the live and the locked ones kept
        wait_for(lambda: not folder.exists(), 120, message="the dead pool process's proxy folder removed")
        assert (live_folder / egress.SOCKET_NAME).exists()
        assert foreign.is_dir()
        # and once no process holds the lock, that one goes too (the local orchestrator's cleanup)
        os.close(held)
        assert egress.remove_leftovers(tmp) == [foreign]
        assert live_folder.exists() and egress.remove_leftovers(tmp) == []
    finally:
        if orchestrate.poll() is None:
            orchestrate.kill()
        live.close()
        store.dispose()
    assert not live_folder.exists()
