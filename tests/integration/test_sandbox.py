"""The sandbox per attempt (bubblewrap, docs/security.md): a probe agent tries, from inside, what it
must not do, while the card still succeeds at what it may do. Real `squad orchestrate` in local
mode, real bwrap, real git, real sockets on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from squad.agents.sandbox import probe
from squad.core.cards import CardSpec, Status
from squad.store.card_store import CardStore
from support.cli import run_cli, squad_env
from support.paths import AGENTS, SRC
from support.processes import free_port, wait_for

PY = sys.executable
PROBE = str(AGENTS / "sandbox_probe.py")
ORCHESTRATE = ["orchestrate", "--mode", "local", "--once", "--wait", "--interval", "0.2"]
#: what every fake agent (a python script of this checkout, run by the venv's python) needs to read
READABLE = json.dumps([str(AGENTS), str(SRC)])



def test_bwrap_works_on_this_machine() -> None:
    """The sandbox tests need bubblewrap (scripts/test installs it): they fail, never skip, without it."""
    assert probe() is None, f"bwrap does not work here: {probe()}"


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP server on loopback standing for Redis or the API: it accepts and closes."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    server.close()


def project(tmp_path: Path, toml: str) -> tuple[dict[str, str], CardStore]:
    db_url = f"sqlite:///{tmp_path / '.squad' / 'squad.db'}"
    (tmp_path / "squad.toml").write_text(toml, encoding="utf-8")
    env = squad_env(USE_CELERY="false", SQUAD_REDIS_URL=f"redis://127.0.0.1:{free_port()}",
                    SQUAD_DATABASE_URL=db_url, SQUAD_MAX_RETRIES="0", SQUAD_ALLOWED_ROOTS=str(tmp_path),
                    HOME=str(tmp_path / "home"))
    return env, CardStore(db_url)


def test_a_hostile_agent_in_its_sandbox_reaches_nothing_but_its_own_folder(tmp_path: Path, listener: int) -> None:
    # Given a store, a config, another card's folder, a fake ssh key, a loopback service and a worker
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY")
    other = tmp_path / "work" / "OTHER-1"
    other.mkdir(parents=True)
    (other / "secret.txt").write_text("other card's work")
    victim = subprocess.Popen(["sleep", "300"])  # a process of the machine (say, the worker)
    spec = {"store": str(tmp_path / ".squad" / "squad.db"), "config": str(tmp_path / "squad.toml"),
            "other_card": str(other / "secret.txt"), "ssh_key": str(home / ".ssh" / "id_ed25519"),
            "outside": str(tmp_path / "planted.txt"), "victim_pid": victim.pid,
            "ports": {"redis-like service": listener}, "forks": 200, "memory_mb": 400}
    config = tmp_path / "squad.toml"
    env, store = project(tmp_path, f"""
default_agent = "probe"
[sandbox]
kind = "bwrap"
network = "off"
pids = 50
memory_mb = 200
ro_paths = {READABLE}
[agents.probe]
command = ["{PY}", "{PROBE}", {json.dumps(json.dumps(spec))}]
[hooks]
before_run = ["sh", "-c", "ls /proc | grep -c '^[0-9]' > hook_procs.txt; cat {config} > hook_read.txt 2>&1; true"]
""")
    store.add_cards([CardSpec(card_id="BOX-1", title="t")])
    # When the card runs
    try:
        res = run_cli(*ORCHESTRATE, env=env)
        victim_alive = victim.poll() is None
    finally:
        victim.kill()
        victim.wait(10)
    # Expect the card DONE with its own work, every probe refused, and the run naming its sandbox
    assert res.returncode == 0, res.stderr
    assert victim_alive
    workdir = tmp_path / "work" / "BOX-1"
    results = json.loads((workdir / "probe.json").read_text())
    # (its write "outside" landed in its private /tmp, gone with the sandbox: the host file is not there)
    refused = {name: got for name, got in results.items() if name not in ("visible processes", "write outside")}
    assert all(got.startswith("refused") for got in refused.values()), json.dumps(results)
    assert int(results["visible processes"]) <= 3, results  # bwrap's init, the agent, its child at most
    assert (workdir / "mine.txt").read_text() == "the agent's own work\n"
    assert not (tmp_path / "planted.txt").exists()
    assert int((workdir / "hook_procs.txt").read_text()) <= 4  # the hook ran inside too
    assert "squad.toml" in (workdir / "hook_read.txt").read_text()  # cat's "No such file" names it
    card = store.get_card("BOX-1")
    assert card.status == Status.DONE
    [run] = store.list_runs("BOX-1")
    assert run.sandbox is not None and run.sandbox.startswith("bwrap (network off")
    shown = run_cli("card", "show", "BOX-1", "--json", env=env)
    assert json.loads(shown.stdout)["runs"][0]["sandbox"] == run.sandbox
    (tmp_path / "probe-results.json").write_text(json.dumps(results))  # for the notes' table
    print("PROBE RESULTS", json.dumps(results))
    store.dispose()


def test_with_network_on_the_sandboxed_agent_reaches_loopback(tmp_path: Path, listener: int) -> None:
    # Given the same probe with the network left on
    spec = {"ports": {"service": listener}}
    env, store = project(tmp_path, f"""
default_agent = "probe"
[sandbox]
kind = "bwrap"
ro_paths = {READABLE}
[agents.probe]
command = ["{PY}", "{PROBE}", {json.dumps(json.dumps(spec))}]
""")
    store.add_cards([CardSpec(card_id="NET-1", title="t")])
    # When
    res = run_cli(*ORCHESTRATE, env=env)
    # Expect
    assert res.returncode == 0, res.stderr
    results = json.loads((tmp_path / "work" / "NET-1" / "probe.json").read_text())
    assert results["connect service"].startswith("ALLOWED"), results
    store.dispose()


def test_git_commits_and_verify_inside_the_sandbox_of_a_worktree(tmp_path: Path) -> None:
    # Given a repository, an agent that commits in its worktree, and a verify that passes only where
    # squad's config is out of sight
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "t@t"], ["config", "user.name", "t"],
                 ["commit", "-q", "--allow-empty", "-m", "root"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    script = ("import subprocess\n"
              "open('made.txt', 'w').write('x')\n"
              "subprocess.run(['git', 'add', 'made.txt'], check=True)\n"
              "subprocess.run(['git', '-c', 'user.email=a@a', '-c', 'user.name=a', 'commit', '-q', '-m', 'agent'],"
              " check=True)\n")
    env, store = project(tmp_path, f"""
default_agent = "committer"
[sandbox]
kind = "bwrap"
network = "off"
ro_paths = {READABLE}
[workspace]
repo = "{repo}"
auto_commit = false
verify = ["sh", "-c", "test ! -e {tmp_path / 'squad.toml'} && git log -1 --format=%s"]
[agents.committer]
command = ["{PY}", "-c", {json.dumps(script)}]
""")
    store.add_cards([CardSpec(card_id="GIT-1", title="t")])
    # When
    res = run_cli(*ORCHESTRATE, env=env)
    # Expect the agent's own commit on the card's branch
    assert res.returncode == 0, res.stderr
    log = subprocess.run(["git", "log", "--format=%s", "squad/GIT-1"], cwd=repo, capture_output=True, text=True,
                         check=True)
    assert log.stdout.splitlines()[0] == "agent"
    [run] = store.list_runs("GIT-1")
    assert (run.verify_exit, (run.verify_output or "").strip()) == (0, "agent"), run.verify_output
    store.dispose()


def test_cancel_ends_the_whole_sandbox(tmp_path: Path) -> None:
    # Given a sandboxed agent that sleeps with a child
    script = ("import subprocess, time\nsubprocess.Popen(['sleep', '300'])\nprint('ready', flush=True)\n"
              "time.sleep(300)\n")
    env, store = project(tmp_path, f"""
default_agent = "sleeper"
[sandbox]
kind = "bwrap"
ro_paths = {READABLE}
[agents.sleeper]
command = ["{PY}", "-c", {json.dumps(script)}]
""")
    store.add_cards([CardSpec(card_id="CAN-1", title="t")])
    proc = subprocess.Popen([PY, "-m", "squad", *ORCHESTRATE], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        def sandbox_procs() -> list[psutil.Process]:
            found = []
            for child in psutil.Process(proc.pid).children(recursive=True):
                try:
                    if "sleep" in " ".join(child.cmdline()) or child.name() == "bwrap":
                        found.append(child)
                except psutil.Error:  # gone, or a zombie
                    continue
            return found

        assert wait_for(lambda: len(sandbox_procs()) >= 3, timeout=60)
        inside = sandbox_procs()
        # When the card is cancelled
        res = run_cli("cancel", "CAN-1", env=env)
        assert res.returncode == 0, res.stderr
        # Expect bwrap, the agent and its child gone within a bounded wait
        _gone, alive = psutil.wait_procs(inside, timeout=2 + 1)  # the cancel poll, then the group kill
        assert not alive, alive
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    store.dispose()


def test_a_card_whose_sandbox_cannot_start_fails_rather_than_running_unconfined(tmp_path: Path) -> None:
    # Given kind = "bwrap" on a machine where bwrap cannot run (a broken binary first on its path)
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "bwrap").write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    (fake / "bwrap").chmod(0o755)
    marker = tmp_path / "ran.txt"
    env, store = project(tmp_path, f"""
default_agent = "a"
[sandbox]
kind = "bwrap"
bwrap = "{fake / 'bwrap'}"
[agents.a]
command = ["{PY}", "-c", "open({str(marker)!r}, 'w').write('unconfined')"]
""")
    store.add_cards([CardSpec(card_id="NO-1", title="t")])
    # When
    res = run_cli(*ORCHESTRATE, env=env)
    # Expect FAILED with the reason, and the agent never ran
    assert res.returncode == 1
    card = store.get_card("NO-1")
    assert card.status == Status.FAILED
    assert "sandbox bwrap cannot start" in (card.last_error or ""), card.last_error
    assert "No permissions" in (card.last_error or "")
    assert not marker.exists()
    store.dispose()


def test_the_agents_mcp_socket_is_reachable_from_inside_the_sandbox(tmp_path: Path) -> None:
    # Given a sandboxed agent that talks back through `squad mcp` (the socket's folder is bound in)
    workdir = tmp_path / "work" / "MCP-1"
    workdir.mkdir(parents=True)
    (workdir / "plan.json").write_text(json.dumps({"MCP-1": {"note": "from inside"}}))
    env, store = project(tmp_path, f"""
default_agent = "talker"
[sandbox]
kind = "bwrap"
network = "off"
ro_paths = {READABLE}
[agents.talker]
command = ["{PY}", "{AGENTS / 'mcp_agent.py'}", "{workdir / 'plan.json'}", "{workdir}"]
""")
    store.add_cards([CardSpec(card_id="MCP-1", title="t")])
    # When
    res = run_cli(*ORCHESTRATE, env=env)
    # Expect its note went through
    assert res.returncode == 0, res.stderr
    record = json.loads((workdir / "MCP-1.1.json").read_text())
    assert record["note"]["error"] is False, record
    store.dispose()
