"""The sandbox per attempt (bubblewrap, docs/security.md): a probe agent tries, from inside, what it
must not do, while the card still succeeds at what it may do. Real `squad orchestrate` in local
mode, real bwrap, real git, real sockets on loopback."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest

from squad.agents.parsers import make_parser
from squad.agents.runner import Limits, run_agent
from squad.agents.sandbox import build, probe
from squad.core.cards import CardSpec
from squad.core.settings import SandboxConfig
from squad.core.statuses import Status
from squad.store.card_store import CardStore
from support.cli import run_cli, squad_env
from support.paths import AGENTS, SRC
from support.processes import wait_for
from support.sandboxed import project
from support.workers import Worker

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


def make_wheel(folder: Path) -> Path:
    """A tiny pure-Python wheel (`squadprobe`, VALUE = 42) that pip installs offline."""
    files = {"squadprobe/__init__.py": "VALUE = 42\n",
             "squadprobe-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: squadprobe\nVersion: 0.1\n",
             "squadprobe-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                               "Tag: py3-none-any\n"}
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append("squadprobe-0.1.dist-info/RECORD,,")
    wheel = folder / "squadprobe-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
        archive.writestr("squadprobe-0.1.dist-info/RECORD", "\n".join(record) + "\n")
    return wheel


def probe_table(results: dict[str, str]) -> str:
    """The probe's results as the table docs/security.md shows."""
    rows = ["| what the agent tried, from inside | what it got |", "|---|---|"]
    rows += [f"| {name} | {got} |" for name, got in results.items()]
    return "\n".join(rows)


def test_a_hostile_agent_in_its_sandbox_reaches_nothing_but_its_own_folder(tmp_path: Path, redis_url: str,
                                                                           api: Any) -> None:
    # Given a store, a config, another card's folder, a fake ssh key, a real Redis and API on loopback,
    # a process of the machine and the worker itself (its pid in the card's folder)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY")
    other = tmp_path / "work" / "OTHER-1"
    other.mkdir(parents=True)
    (other / "secret.txt").write_text("other card's work")
    workdir = tmp_path / "work" / "BOX-1"
    workdir.mkdir()
    wheel = make_wheel(workdir)
    victim = subprocess.Popen(["sleep", "300"])  # a process of the machine
    spec = {"store": str(tmp_path / ".squad" / "squad.db"), "config": str(tmp_path / "squad.toml"),
            "other_card": str(other / "secret.txt"), "ssh_key": str(home / ".ssh" / "id_ed25519"),
            "outside": str(tmp_path / "planted.txt"), "readable": str(SRC / "planted-by-the-probe.txt"),
            "victim_pid": victim.pid, "worker_pid_file": "worker.pid",
            "ports": {"Redis on loopback": urlsplit(redis_url).port, "the API on loopback": urlsplit(api.url).port},
            "forks": 200, "memory_mb": 400, "pytest": True, "wheel": wheel.name}
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
    # When the card runs (the worker writes its own pid where the agent can read it, then becomes squad)
    try:
        res = subprocess.run(["sh", "-c", 'echo $$ > "$0/worker.pid" && exec "$@"', str(workdir),
                              PY, "-m", "squad", *ORCHESTRATE], env=env, capture_output=True, text=True,
                             timeout=300, check=False)
        victim_alive = victim.poll() is None
    finally:
        victim.kill()
        victim.wait(10)
    # Expect the card DONE with its own work, every probe refused, the worker and the process unharmed,
    # and the run naming its sandbox
    assert res.returncode == 0, res.stderr
    assert victim_alive
    results = json.loads((workdir / "probe.json").read_text())
    print(probe_table(results))
    # (its write "outside" landed in its private /tmp, gone with the sandbox: the host file is not there)
    refused = {name: got for name, got in results.items()
               if name not in ("visible processes", "write outside") and not name.startswith("own ")}
    assert len(refused) == 11, results
    assert all(got.startswith("refused") for got in refused.values()), json.dumps(results)
    assert {name: got for name, got in results.items() if name.startswith("own ")} == {
        "own python -m pytest": "ok", "own pip install --target": "ok", "own import what pip installed": "ok"}
    assert int(results["visible processes"]) <= 3, results  # bwrap's init, the agent, its child at most
    assert (workdir / "mine.txt").read_text() == "the agent's own work\n"
    assert not (tmp_path / "planted.txt").exists()
    assert not (SRC / "planted-by-the-probe.txt").exists()
    assert int((workdir / "hook_procs.txt").read_text()) <= 4  # the hook ran inside too
    assert "squad.toml" in (workdir / "hook_read.txt").read_text()  # cat's "No such file" names it
    card = store.get_card("BOX-1")
    assert card.status == Status.DONE
    [run] = store.list_runs("BOX-1")
    assert run.sandbox is not None and run.sandbox.startswith("bwrap (network off")
    assert "memory 200 (cgroup" in run.sandbox or "memory 200 (rlimit" in run.sandbox, run.sandbox
    # `squad card show` (JSON and text) and the attempt's log say which sandbox ran it
    shown = run_cli("card", "show", "BOX-1", "--json", env=env)
    assert json.loads(shown.stdout)["runs"][0]["sandbox"] == run.sandbox
    assert run.sandbox in run_cli("card", "show", "BOX-1", env={**env, "COLUMNS": "400"}).stdout
    assert f"sandbox: {run.sandbox}" in run_cli("logs", "BOX-1", env=env).stdout
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


def make_repo_on_a_side_branch(repo: Path) -> None:
    """A repository whose `main` is not checked out (the user works on `user`): squad may land on it."""
    repo.mkdir()
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "t@t"], ["config", "user.name", "t"],
                 ["commit", "-q", "--allow-empty", "-m", "root"], ["checkout", "-q", "-b", "user"]):
        subprocess.run(["git", *args], cwd=repo, check=True)


def git_out(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


#: A hook's probe, as a shell line: what it sees ("procs=N config=refused home=refused") goes into
#: the message of a commit it makes where it runs (git works inside).
HOOK_PROBE = ("procs=$(ls /proc | grep -c '^[0-9]'); "
              "config=$(cat {config} >/dev/null 2>&1 && echo READ || echo refused); "
              "key=$(cat {key} >/dev/null 2>&1 && echo READ || echo refused); "
              "touch {outside} 2>/dev/null; "
              "git -c user.email=h@h -c user.name=h commit -q --allow-empty "
              "-m \"{name} procs=$procs config=$config key=$key\"")


def test_after_approve_runs_in_the_cards_sandbox_and_commits_in_its_worktree(tmp_path: Path) -> None:
    # Given a card in REVIEW whose after_approve hook probes and commits where it runs, in a sandbox
    repo = tmp_path / "repo"
    make_repo_on_a_side_branch(repo)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY")
    probe_line = HOOK_PROBE.format(config=tmp_path / "squad.toml", key=home / ".ssh" / "id_ed25519",
                                   outside=tmp_path / "planted.txt", name="approved")
    env, store = project(tmp_path, f"""
default_agent = "writer"
[sandbox]
kind = "bwrap"
network = "off"
ro_paths = {READABLE}
[workspace]
repo = "{repo}"
review = true
after_approve = ["sh", "-c", {json.dumps(probe_line)}]
[agents.writer]
command = ["{PY}", "-c", "open('made.txt', 'w').write('x')"]
""")
    store.add_cards([CardSpec(card_id="APP-1", title="t")])
    assert run_cli(*ORCHESTRATE, env=env).returncode == 0
    assert store.get_card("APP-1").status == Status.REVIEW
    # When it is approved
    res = run_cli("review", "approve", "APP-1", env=env)
    # Expect the hook's commit on the card's branch, made inside: few processes, no config, no key,
    # nothing planted outside
    assert res.returncode == 0, res.stderr
    message = git_out(repo, "log", "-1", "--format=%s", "squad/APP-1").strip()
    name, procs, config, key = message.split()
    assert (name, config, key) == ("approved", "config=refused", "key=refused"), message
    assert int(procs.removeprefix("procs=")) <= 6, message  # bwrap's init, sh, its subshell, ls, grep
    assert not (tmp_path / "planted.txt").exists()
    assert store.get_card("APP-1").status == Status.DONE
    store.dispose()


def test_after_approve_of_a_card_without_a_workspace_runs_in_its_folder_in_the_sandbox(tmp_path: Path) -> None:
    # Given a reviewed card without a repository, and an after_approve hook that writes where it runs
    probe_line = "pwd > approved.txt; cat {config} >> approved.txt 2>/dev/null || echo config=refused >> approved.txt"
    env, store = project(tmp_path, f"""
default_agent = "writer"
[sandbox]
kind = "bwrap"
network = "off"
ro_paths = {READABLE}
[workspace]
after_approve = ["sh", "-c", {json.dumps(probe_line.format(config=tmp_path / "squad.toml"))}]
[agents.writer]
command = ["{PY}", "-c", "open('made.txt', 'w').write('x')"]
""")
    store.add_cards([CardSpec(card_id="REV-1", title="t", review=True)])
    assert run_cli(*ORCHESTRATE, env=env).returncode == 0
    assert store.get_card("REV-1").status == Status.REVIEW
    # When it is approved (from the project's folder, which holds squad.toml and the store)
    res = subprocess.run([PY, "-m", "squad", "review", "approve", "REV-1"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, check=False)
    # Expect the hook ran in the card's own folder, and saw no config
    assert res.returncode == 0, res.stderr
    folder = tmp_path / "work" / "REV-1"
    assert (folder / "approved.txt").read_text().splitlines() == [str(folder.resolve()), "config=refused"]
    assert store.get_card("REV-1").status == Status.DONE
    store.dispose()


def test_after_land_runs_in_the_sandbox_in_a_worktree_of_the_landed_commit_and_pushes_where_declared(
        tmp_path: Path) -> None:
    # Given a card landing on main, and an after_land hook that probes, commits on the landed commit
    # and pushes to two local repositories: one declared in rw_paths, one not
    repo = tmp_path / "repo"
    make_repo_on_a_side_branch(repo)
    published, undeclared = tmp_path / "published.git", tmp_path / "undeclared.git"
    for bare in (published, undeclared):
        subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    probe_line = HOOK_PROBE.format(config=tmp_path / "squad.toml", key=tmp_path / "nokey",
                                   outside=tmp_path / "planted.txt", name="landed")
    hook = ["sh", "-c", f"{probe_line}; git push -q {published} HEAD:refs/heads/after-land; "
                        f"git push -q {undeclared} HEAD:refs/heads/after-land; "
                        "test \"$(git rev-parse HEAD^)\" = \"$1\"", "after_land", "{landed_commit}"]
    env, store = project(tmp_path, f"""
default_agent = "writer"
[sandbox]
kind = "bwrap"
network = "off"
ro_paths = {READABLE}
rw_paths = ["{published}"]
[workspace]
repo = "{repo}"
base = "main"
land = "merge"
land_when = "done"
after_land = {json.dumps(hook)}
[agents.writer]
command = ["{PY}", "-c", "open('made.txt', 'w').write('x')"]
""")
    store.add_cards([CardSpec(card_id="LAND-1", title="t")])
    # When the card runs and lands
    res = run_cli(*ORCHESTRATE, env=env)
    # Expect it landed, and the hook's commit (on top of the landed commit) pushed where declared only
    assert res.returncode == 0, res.stderr
    assert store.get_card("LAND-1").status == Status.DONE, store.get_card("LAND-1").last_error
    landed = store.list_runs("LAND-1")[-1].landed_commit
    assert landed == git_out(repo, "rev-parse", "main").strip()
    message = git_out(published, "log", "-1", "--format=%s", "after-land").strip()
    name, procs, config, _key = message.split()
    assert (name, config) == ("landed", "config=refused"), message
    assert int(procs.removeprefix("procs=")) <= 6, message
    assert git_out(published, "rev-parse", "after-land^").strip() == landed
    assert git_out(undeclared, "for-each-ref") == ""  # not in rw_paths: not even visible
    assert not (tmp_path / "planted.txt").exists()
    # (the hook's worktree is gone, and the user's checkout untouched)
    assert git_out(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "user"
    assert len(git_out(repo, "worktree", "list").splitlines()) == 1
    store.dispose()


#: A sandboxed agent that records its PID namespace, starts a child that ignores SIGTERM, and on
#: SIGTERM writes "SIGTERM" to term.txt and exits (an agent saving its work in its grace period)
GRACEFUL = ("import os, signal, subprocess, sys, time\n"
            "open('ns.txt', 'w').write(str(os.stat('/proc/self/ns/pid').st_ino))\n"
            "subprocess.Popen([sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGTERM, "
            "signal.SIG_IGN); time.sleep(300)'])\n"
            "def term(*_):\n"
            "    open('term.txt', 'w').write('SIGTERM')\n"
            "    sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, term)\n"
            "print('ready', flush=True)\n"
            "time.sleep(300)\n")


def namespace_processes(inode: int) -> list[int]:
    """The machine's processes in the PID namespace `inode` (a sandbox's: what is left of it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "ns" / "pid").stat().st_ino == inode:
                    found.append(int(entry.name))
            except OSError:  # gone meanwhile
                continue
    return found


def describe(pids: list[int]) -> list[str]:
    """Each process as /proc shows it: pid, name, state, parent."""
    found = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        name_end = stat.rfind(")")
        fields = stat[name_end + 2:].split()
        found.append(f"{pid} {stat[stat.find('(') + 1:name_end]} {fields[0]} parent {fields[1]}")
    return found


def test_cancel_gives_the_sandboxed_agent_its_sigterm_then_ends_the_whole_sandbox_within_2_s(
        tmp_path: Path) -> None:
    # Given a sandboxed agent that saves its work on SIGTERM, with a child that ignores SIGTERM
    env, store = project(tmp_path, f"""
default_agent = "sleeper"
[sandbox]
kind = "bwrap"
ro_paths = {READABLE}
[agents.sleeper]
command = ["{PY}", "-c", {json.dumps(GRACEFUL)}]
""")
    store.add_cards([CardSpec(card_id="CAN-1", title="t")])
    workdir = tmp_path / "work" / "CAN-1"
    proc = subprocess.Popen([PY, "-m", "squad", *ORCHESTRATE], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (workdir / "ns.txt").exists(), timeout=60, message="the agent to start")
        inode = int((workdir / "ns.txt").read_text())
        wait_for(lambda: len(namespace_processes(inode)) >= 3, timeout=30,
                 message="bwrap's init, the agent and its child")
        # When the card is cancelled (what `squad cancel` does to a running card, without the wait
        # for its run to close that the command adds: the clock starts with the cancel itself)
        store.cancel("CAN-1")
        cancelled = time.monotonic()
        # Expect no process of its PID namespace left within the 2 s, the agent having had its SIGTERM
        try:
            wait_for(lambda: not namespace_processes(inode), timeout=2, interval=0.05,
                     message="every process of the sandbox to end")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; left: {describe(namespace_processes(inode))}") from None
        print(f"figure: sandbox ended {time.monotonic() - cancelled:.2f} s after the cancel")
        assert (workdir / "term.txt").read_text() == "SIGTERM"
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert store.get_card("CAN-1").status == Status.CANCELLED
    store.dispose()


def test_cancel_on_a_celery_worker_gives_the_sigterm_and_ends_the_sandbox_within_2_s(
        tmp_path: Path, redis_url: str, sqlite_url: str, start_worker: Callable[..., Worker]) -> None:
    # Given the same agent on a real worker (its pool process runs the agent)
    (tmp_path / "squad.toml").write_text(f"""
default_agent = "sleeper"
[sandbox]
kind = "bwrap"
ro_paths = {READABLE}
[agents.sleeper]
command = ["{PY}", "-c", {json.dumps(GRACEFUL)}]
""", encoding="utf-8")
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url, SQUAD_MAX_RETRIES="0")
    store = CardStore(sqlite_url)
    store.add_cards([CardSpec(card_id="CAN-2", title="t")])
    start_worker(env, concurrency=1)
    workdir = tmp_path / "work" / "CAN-2"
    orchestrator = subprocess.Popen([PY, "-m", "squad", "orchestrate", "--once", "--wait", "--mode", "celery",
                                     "--interval", "0.2"], env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (workdir / "ns.txt").exists(), timeout=90, message="the agent to start")
        inode = int((workdir / "ns.txt").read_text())
        wait_for(lambda: len(namespace_processes(inode)) >= 3, timeout=30,
                 message="bwrap's init, the agent and its child")
        # When the card is cancelled
        store.cancel("CAN-2")
        # Expect the sandbox gone within the 2 s, the agent having had its SIGTERM
        try:
            wait_for(lambda: not namespace_processes(inode), timeout=2, interval=0.05,
                     message="every process of the sandbox to end")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; left: {describe(namespace_processes(inode))}") from None
        assert (workdir / "term.txt").read_text() == "SIGTERM"
        orchestrator.wait(90)
    finally:
        if orchestrator.poll() is None:
            orchestrator.kill()
            orchestrator.wait(10)
    assert store.get_card("CAN-2").status == Status.CANCELLED
    store.dispose()


class _Watch:
    """A run_agent observer that keeps the lines and never cancels."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def on_line(self, level: str, message: str) -> None:
        self.lines.append(message)

    def on_progress(self, progress: int, step: str) -> None:
        return None

    def stop_reason(self) -> str | None:
        return None


@pytest.mark.parametrize("limit", ["soft_timeout", "stalled"])
def test_a_limit_gives_the_sandboxed_agent_its_sigterm_grace_then_ends_the_whole_sandbox(
        tmp_path: Path, limit: str) -> None:
    # Given a sandboxed agent (the worker's own path: run_agent) that saves its work on SIGTERM
    config = SandboxConfig(kind="bwrap", ro_paths=[str(AGENTS), str(SRC)])
    box = build(config, workdir=tmp_path, program=PY)
    limits = (Limits(soft_time_limit_s=1, time_limit_s=600) if limit == "soft_timeout"
              else Limits(soft_time_limit_s=600, time_limit_s=600, stall_timeout_s=1))
    # When its soft time limit passes, or it stalls
    result = run_agent([PY, "-c", GRACEFUL], cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                       stdin_data=None, parser=make_parser("plain"), limits=limits, observer=_Watch(), sandbox=box)
    # Expect that limit to end it, after the agent had its SIGTERM, and nothing of the sandbox left
    assert result.outcome == limit, result
    assert (tmp_path / "term.txt").read_text() == "SIGTERM"
    assert namespace_processes(int((tmp_path / "ns.txt").read_text())) == []


def test_an_agent_ignoring_sigterm_is_killed_with_its_sandbox_after_the_grace(tmp_path: Path) -> None:
    # Given a sandboxed agent that ignores SIGTERM (and its child too)
    script = GRACEFUL.replace("signal.signal(signal.SIGTERM, term)", "signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    box = build(SandboxConfig(kind="bwrap", ro_paths=[str(AGENTS), str(SRC)]), workdir=tmp_path, program=PY)
    # When its soft limit passes (a short grace)
    result = run_agent([PY, "-c", script], cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                       stdin_data=None, parser=make_parser("plain"),
                       limits=Limits(soft_time_limit_s=1, time_limit_s=600, kill_grace_s=1), observer=_Watch(),
                       sandbox=box)
    # Expect the whole sandbox gone all the same
    assert result.outcome == "soft_timeout", result
    assert not (tmp_path / "term.txt").exists()
    assert namespace_processes(int((tmp_path / "ns.txt").read_text())) == []


def test_a_sandboxed_hook_that_times_out_gets_its_sigterm_inside(tmp_path: Path) -> None:
    # Given a before_run hook that saves its state on SIGTERM and waits on a child, with a 1 s timeout
    hook = "trap 'echo term > hook_term.txt; exit 0' TERM; sleep 300 & wait"
    env, store = project(tmp_path, f"""
default_agent = "a"
[sandbox]
kind = "bwrap"
network = "off"
ro_paths = {READABLE}
[agents.a]
command = ["{PY}", "-c", "open('agent_ran.txt', 'w').write('x')"]
[hooks]
timeout = 1
before_run = ["sh", "-c", {json.dumps(hook)}]
""")
    store.add_cards([CardSpec(card_id="HOOK-1", title="t")])
    # When the card runs
    res = run_cli(*ORCHESTRATE, env=env)
    # Expect the attempt failed on the timeout, the hook having had its SIGTERM inside its sandbox
    assert res.returncode == 1, res.stderr
    workdir = tmp_path / "work" / "HOOK-1"
    assert (workdir / "hook_term.txt").read_text() == "term\n"
    assert not (workdir / "agent_ran.txt").exists()
    card = store.get_card("HOOK-1")
    assert card.status == Status.FAILED and "hook before_run timed out" in (card.last_error or ""), card.last_error
    store.dispose()


def _broken_bwrap(tmp_path: Path) -> Path:
    """A folder with a `bwrap` that fails as bwrap does without user namespaces."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "bwrap").write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    (fake / "bwrap").chmod(0o755)
    return fake


def test_a_card_whose_sandbox_cannot_start_fails_rather_than_running_unconfined(tmp_path: Path) -> None:
    # Given kind = "bwrap" on a machine where bwrap cannot run (a broken binary first on its path)
    fake = _broken_bwrap(tmp_path)
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


def test_many_fast_sandboxed_cards_leave_no_zombie_in_the_local_orchestrator(tmp_path: Path) -> None:
    # Given a local orchestrator (not a worker: nothing but the runner reaps its adopted children)
    # and agents that exit at once, before the runner's first look at the sandbox's processes
    env, store = project(tmp_path, f"""
default_agent = "quick"
[sandbox]
kind = "bwrap"
network = "off"
[agents.quick]
command = ["{PY}", "-c", "pass"]
""")
    cards = 20
    store.add_cards([CardSpec(card_id=f"QUICK-{n}", title="t") for n in range(cards)])
    orchestrator = subprocess.Popen([PY, "-m", "squad", "orchestrate", "--mode", "local", "--interval", "0.2"],
                                    env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # When every card has run (or settled otherwise: a failed one is reported, not waited for)
        settled = {Status.DONE.value, Status.FAILED.value, Status.CANCELLED.value}
        wait_for(lambda: sum(n for s, n in store.count_by_status().items() if s in settled) == cards
                 or orchestrator.poll() is not None, 150, message="every card settled")
        assert orchestrator.poll() is None, orchestrator.stderr.read() if orchestrator.stderr else ""
        failed = {c.card_id: [r.error for r in store.list_runs(c.card_id)]
                  for c in store.list_cards() if c.status != Status.DONE}
        assert failed == {}, failed  # (one failed when a channel's umask narrowed another card's workdir)
        # Expect no child of the orchestrator left, a zombie least of all
        left = [(p.pid, p.status()) for p in psutil.Process(orchestrator.pid).children()]
        assert left == [], left
    finally:
        orchestrator.terminate()
        orchestrator.wait(60)
        store.dispose()


#: run_agent in a process that adopts orphans but is not dedicated to agents (so no sweep of
#: unknown children at an attempt's end): fast sandboxed agents, then its children as JSON
FAST_AGENTS = """
import json, sys, psutil
from pathlib import Path
from squad.agents import orphans
from squad.agents.parsers import make_parser
from squad.agents.runner import Limits, run_agent
from squad.agents.sandbox import build
from squad.core.settings import SandboxConfig

class Watch:
    pausing = None
    def on_line(self, level, message): pass
    def on_progress(self, progress, step): pass
    def stop_reason(self): return None

orphans.become_subreaper()
folder = Path(sys.argv[1])
for n in range(int(sys.argv[2])):
    box = build(SandboxConfig(kind="bwrap"), workdir=folder, program=sys.executable)
    result = run_agent([sys.executable, "-c", "pass"], cwd=folder, env={"PATH": "/usr/bin:/bin", "HOME": str(folder)},
                       stdin_data=None, parser=make_parser("plain"), limits=Limits(600, 600), observer=Watch(),
                       sandbox=box)
    assert result.outcome == "succeeded", result
    box.close()
print(json.dumps([[p.pid, p.status()] for p in psutil.Process().children()]))
"""


def test_agents_exiting_at_once_leave_no_zombie_even_where_unknown_children_are_not_swept(tmp_path: Path) -> None:
    # Given a process that adopts orphans (as every process running agents does) but does not end
    # unknown children at an attempt's end (only workers and the local orchestrator do)
    # When it runs 20 sandboxed agents that exit at once (bwrap leaves before the sandbox's init)
    res = subprocess.run([PY, "-c", FAST_AGENTS, str(tmp_path), "20"], capture_output=True, text=True, timeout=300)
    # Expect every init reaped: no child left, a zombie least of all (bwrap reports its init at once)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [], res.stdout


def test_an_unset_kind_confines_agents_where_bwrap_works(tmp_path: Path) -> None:
    # Given no `kind` at all: only what the agent needs to read (its interpreter's script) declared
    env, store = project(tmp_path, f"""
default_agent = "a"
[sandbox]
ro_paths = {READABLE}
[agents.a]
command = ["{PY}", "{AGENTS / 'markers.py'}"]
""")
    store.add_cards([CardSpec(card_id="DEF-1", title="t")])
    # When the card runs
    res = run_cli(*ORCHESTRATE, env=env)
    # Expect it ran in bwrap, no warning said, and `squad doctor` calls bwrap the default
    assert res.returncode == 0, res.stderr
    assert "unconfined" not in res.stderr
    [run] = store.list_runs("DEF-1")
    assert run.sandbox is not None and run.sandbox.startswith("bwrap ("), run.sandbox
    checks = {c["name"]: c for c in json.loads(run_cli("doctor", "--json", env=env).stdout)}
    assert checks["sandbox"]["ok"] and "default" in str(checks["sandbox"]["detail"]), checks["sandbox"]
    store.dispose()


def test_where_bwrap_does_not_work_an_unset_kind_falls_back_to_none_and_says_why(tmp_path: Path) -> None:
    # Given no `kind`, and a bwrap that cannot run here (a broken binary, as without user namespaces)
    fake = _broken_bwrap(tmp_path)
    marker = tmp_path / "ran.txt"
    env, store = project(tmp_path, f"""
default_agent = "a"
[sandbox]
bwrap = "{fake / 'bwrap'}"
[agents.a]
command = ["{PY}", "-c", "open({str(marker)!r}, 'w').write('unconfined')"]
""")
    store.add_cards([CardSpec(card_id="FALL-1", title="t")])
    # When the card runs
    res = run_cli(*ORCHESTRATE, env=env)
    # Expect it ran unconfined (the run says `none`), after one warning naming why and what to do
    assert res.returncode == 0, res.stderr
    assert marker.read_text() == "unconfined"
    [run] = store.list_runs("FALL-1")
    assert run.sandbox == "none"
    warnings = [line for line in res.stderr.splitlines() if "unconfined" in line]
    assert len(warnings) == 1, res.stderr
    assert warnings[0].startswith("warning: sandbox: none") and "No permissions" in warnings[0], warnings
    assert 'kind = "none"' in warnings[0]
    # ... and `squad doctor` reports it as a finding with its fix
    checks = {c["name"]: c for c in json.loads(run_cli("doctor", "--json", env=env).stdout)}
    assert not checks["sandbox"]["ok"] and "No permissions" in str(checks["sandbox"]["detail"]), checks["sandbox"]
    assert "install bubblewrap" in str(checks["sandbox"]["fix"])
    store.dispose()
