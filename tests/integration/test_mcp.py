"""The agents' channel back (`squad mcp`, docs/agents.md) end to end: a fake agent
(tests/agents/mcp_agent.py) starts `squad mcp` with the official MCP client and calls its tools
while a real orchestrator (local mode) or a real `squad worker` (Celery mode) runs the attempt."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from squad.attempt.channel import AttemptChannel
from squad.channel.wire import encode, read_line
from squad.core.retries import RetryPolicy
from squad.core.settings import load_settings
from squad.core.statuses import Status
from squad.store.card_store import CardStore
from support.api import run_api
from support.cli import run_cli, squad_env
from support.fake_agents import sandbox_toml
from support.paths import AGENTS
from support.processes import free_port, kill_tree, wait_for
from support.store import add
from support.workers import StartWorker

PY = sys.executable
TOOLS = ["add_note", "ask_human", "create_cards", "get_card", "report_progress"]


class Project:
    """A folder with squad.toml (the MCP agent), its SQLite store and a plan per card."""

    def __init__(self, root: Path, **env: str) -> None:
        self.root = root
        self.out = root / "out"
        self.out.mkdir()
        self.plan_file = root / "plan.json"
        self.plan_file.write_text("{}")
        self.db_url = f"sqlite:///{root / '.squad' / 'squad.db'}"
        (root / "squad.toml").write_text(
            f'default_agent = "talker"\n{sandbox_toml(self.out, ro_paths=(self.plan_file,))}'
            f'[agents.talker]\ncommand = ["{PY}", "{AGENTS / "mcp_agent.py"}", '
            f'"{self.plan_file}", "{self.out}"]\n', encoding="utf-8")
        defaults = {"USE_CELERY": "false", "SQUAD_REDIS_URL": f"redis://127.0.0.1:{free_port()}",
                    "SQUAD_DATABASE_URL": self.db_url, "SQUAD_MAX_RETRIES": "0", "SQUAD_RETRY_BACKOFF": "0.2"}
        self.env = squad_env(**{**defaults, **env})
        self.store = CardStore(self.db_url)

    def plan(self, plans: dict[str, Any]) -> None:
        self.plan_file.write_text(json.dumps(plans))

    def add(self, *cards: dict[str, Any]) -> None:
        path = self.root / "backlog.json"
        path.write_text(json.dumps({"cards": list(cards)}))
        done = run_cli("backlog", "import", str(path), env=self.env)
        assert done.returncode == 0, done.stderr

    def record(self, card_id: str, attempt: int = 1) -> dict[str, Any]:
        return dict(json.loads((self.out / f"{card_id}.{attempt}.json").read_text()))

    def orchestrate(self, *extra: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return run_cli("orchestrate", "--mode", "local", "--once", "--wait", "--interval", "0.2", *extra,
                       env=self.env, timeout=timeout)

    def start_orchestrator(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([PY, "-m", "squad", "orchestrate", "--mode", "local", "--once", "--wait",
                                 "--interval", "0.2"], env=self.env, cwd=self.root, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    p = Project(tmp_path)
    yield p
    p.store.dispose()


def test_an_agent_lists_the_tools_and_its_sub_cards_run_in_order_while_the_parent_waits(project: Project) -> None:
    # Given a card whose agent reports progress, leaves a note, reads its card and splits it in two
    # sub-cards, the second depending on the first
    project.plan({"P": {"progress": [55, "splitting"], "note": "two parts: api then ui", "get_card": True,
                        "create": [{"title": "api part", "acceptance_criteria": ["GET works"]},
                                   {"title": "ui part", "depends_on": ["P.1"], "priority": 7}]}})
    project.add({"card_id": "P", "title": "feature", "squad": "web", "depends_on": []})
    # When the orchestrator runs until nothing is left
    done = project.orchestrate()
    # Expect every card DONE: the sub-cards with the ids <parent>.<n>, the parent's squad and the parent set
    assert done.returncode == 0, done.stderr
    record = project.record("P")
    assert record["tools"] == TOOLS
    assert not record["progress"]["error"] and not record["note"]["error"]
    card = json.loads(record["get_card"]["text"])
    assert card["card"]["card_id"] == "P" and card["attempt"] == 1 and card["dependencies"] == []
    assert json.loads(record["create"]["text"]) == {"card_ids": ["P.1", "P.2"]}
    cards = {c.card_id: c for c in project.store.list_cards()}
    assert {cid: c.status for cid, c in cards.items()} == {"P": Status.DONE, "P.1": Status.DONE, "P.2": Status.DONE}
    assert cards["P.1"].parent == cards["P.2"].parent == "P" and cards["P"].parent is None
    assert cards["P.1"].squad == "web" and cards["P.2"].priority == 7 and cards["P.2"].depends_on == ["P.1"]
    assert cards["P.1"].acceptance_criteria == ["GET works"]
    # ... the sub-cards in dependency order, and the parent DONE only after its attempt and both of them
    (p_run,), (one,), (two,) = (project.store.list_runs(cid) for cid in ("P", "P.1", "P.2"))
    assert one.ended_at is not None and two.started_at is not None and one.ended_at <= two.started_at
    assert p_run.ended_at is not None and two.ended_at is not None
    assert cards["P"].updated_at is not None and cards["P"].updated_at >= max(p_run.ended_at, two.ended_at)
    # ... and the note in the card's log as a NOTE entry, the progress as reported
    log = project.store.run_log(p_run.id)
    assert "NOTE two parts: api then ui" in log
    shown = run_cli("card", "show", "P.1", "--json", env=project.env)
    assert json.loads(shown.stdout)["parent"] == "P"


def test_a_parent_fails_when_a_sub_card_fails_for_good(project: Project) -> None:
    # Given a parent whose sub-card's agent fails (no retries)
    project.plan({"F": {"create": [{"title": "doomed"}]}, "F.1": {"exit": 3}})
    project.add({"card_id": "F", "title": "parent"})
    # When it all runs
    done = project.orchestrate()
    # Expect the sub-card FAILED and the parent FAILED with the reason, though its own attempt succeeded
    assert done.returncode == 1
    parent, child = project.store.get_card("F"), project.store.get_card("F.1")
    assert child.status == Status.FAILED and parent.status == Status.FAILED
    assert parent.last_error == "sub-card F.1 is FAILED"
    assert [r.status for r in project.store.list_runs("F")] == ["succeeded"]


def test_ask_human_waits_past_the_stall_timer_and_is_answered_by_the_cli_and_by_the_api(tmp_path: Path) -> None:
    # Given a stall timer of 3 s, and two cards whose agents print until they ask a person (one with choices)
    project = Project(tmp_path, SQUAD_STALL_TIMEOUT="3", SQUAD_TIME_LIMIT="60", SQUAD_SOFT_TIME_LIMIT="60")
    project.plan({"Q1": {"ask": ["Keep the v1 route?", ["yes", "no"]], "heartbeat": True},
                  "Q2": {"ask": ["Which port?", None], "heartbeat": True}})
    project.add({"card_id": "Q1", "title": "asks"}, {"card_id": "Q2", "title": "asks too"})
    # When the orchestrator runs them
    proc = project.start_orchestrator()

    def asking() -> str | None:  # the card waiting for an answer now (one slot may run them one by one)
        waiting = [c.card_id for c in project.store.list_cards() if c.status == Status.NEEDS_INPUT]
        return waiting[0] if waiting else None

    try:
        try:
            first = str(wait_for(asking, 90, message="a card NEEDS_INPUT"))
        except AssertionError:
            raise AssertionError([(c.card_id, c.status, c.last_error, c.current_step)
                                  for c in project.store.list_cards()]) from None
        # Expect it shown with its question (CLI, and the API's card objects below)
        listed = run_cli("questions", "--json", env=project.env)
        assert listed.returncode == 0, listed.stderr
        asked = {c["card_id"]: (c["question"], c["choices"]) for c in json.loads(listed.stdout)}
        expected = {"Q1": ("Keep the v1 route?", ["yes", "no"]), "Q2": ("Which port?", None)}
        assert asked[first] == expected[first]
        # ... still waiting well past the stall timer (it stands still while the agent waits)
        time.sleep(9)  # three stall timeouts
        assert project.store.get_card(first).status == Status.NEEDS_INPUT
        # When it is answered with the CLI
        answered = run_cli("answer", first, "yes", env=project.env)
        assert answered.returncode == 0, answered.stderr
        # Expect a second answer refused: it waits for none any more (exit 2, one line)
        again = run_cli("answer", first, "no", env=project.env)
        assert again.returncode == 2 and again.stderr.count("\n") == 1 and "waits for no answer" in again.stderr
        # When the other one asks, it is answered through the API
        second = str(wait_for(lambda: (found := asking()) != first and found, 90, message="the other card asks"))
        settings = load_settings(database_url=project.db_url, redis_url=project.env["SQUAD_REDIS_URL"])
        with run_api(settings) as api:
            listed_api = httpx.get(f"{api.url}/api/questions", timeout=30).json()
            assert [(c["card_id"], c["question"]) for c in listed_api] == [(second, expected[second][0])]
            bad = httpx.post(f"{api.url}/api/cards/{second}/answer", json={"answer": ""}, timeout=30)
            assert bad.status_code == 422
            ok = httpx.post(f"{api.url}/api/cards/{second}/answer", json={"answer": "8080"}, timeout=30)
            assert ok.status_code == 200, ok.text
            assert ok.json()["card"]["status"] in ("IN_PROGRESS", "DONE")
            wait_for(lambda: proc.poll() is not None, 90, message="orchestrator done")
            late = httpx.post(f"{api.url}/api/cards/{second}/answer", json={"answer": "9090"}, timeout=30)
            assert late.status_code == 409
            assert httpx.post(f"{api.url}/api/cards/NOPE/answer", json={"answer": "x"}, timeout=30).status_code == 404
    finally:
        kill_tree(proc)
    assert project.record(first)["ask"]["text"] == "yes" and project.record(second)["ask"]["text"] == "8080"
    # Expect each agent to get its answer, and both cards DONE without a stall
    assert {c.status for c in project.store.list_cards()} == {Status.DONE}
    assert [r.error for cid in ("Q1", "Q2") for r in project.store.list_runs(cid)] == [None, None]


def test_no_answer_in_time_returns_no_answer(tmp_path: Path) -> None:
    # Given an answer budget of 1 s
    project = Project(tmp_path, SQUAD_ASK_TIMEOUT="1")
    project.plan({"N": {"ask": ["anyone?", None]}})
    project.add({"card_id": "N", "title": "asks into the void"})
    # When it runs with nobody answering
    done = project.orchestrate()
    # Expect "no answer" and the card DONE
    assert done.returncode == 0, done.stderr
    assert project.record("N")["ask"]["text"] == "no answer"
    assert project.store.get_card("N").status == Status.DONE


def test_a_credential_is_refused_after_its_attempt_and_by_another_attempts_socket(tmp_path: Path) -> None:
    # Given a card whose first attempt fails and whose second reuses the first one's credential
    project = Project(tmp_path, SQUAD_MAX_RETRIES="1")
    project.plan({"R": {"reuse": True, "exit": [1, 0]}})
    project.add({"card_id": "R", "title": "retried"})
    # When it runs twice
    done = project.orchestrate()
    # Expect the old credential refused on the new attempt's socket, and the old socket gone
    assert done.returncode == 0, done.stderr
    second = project.record("R", 2)
    assert second["reuse_token"]["error"] and "not a credential of this attempt" in second["reuse_token"]["text"]
    assert second["reuse_socket"]["error"] and "this attempt is over" in second["reuse_socket"]["text"]
    assert not Path(project.record("R", 1)["mcp_dir"]).exists()


def test_a_fenced_attempts_credential_is_refused(tmp_path: Path) -> None:
    # Given a running card whose agent waits on a gate, its credential known
    project = Project(tmp_path, SQUAD_LEASE_S="30")
    gate = tmp_path / "gate"
    project.plan({"G": {"gate": str(gate)}})
    project.add({"card_id": "G", "title": "fenced"})
    proc = project.start_orchestrator()
    try:
        wait_for(lambda: (project.out / "G.1.json").exists(), 90, message="agent talked")
        record = project.record("G")
        token = project.store.execution_state("G")["claim_token"]
        # When the sweeper takes the card from it (its lease judged lost) while it still runs
        lost = project.store.lose_claim("G", token, "worker lost", RetryPolicy(max_retries=0, backoff_s=0,
                                                                         backoff_max_s=0),
                                        now=10**12)
        assert lost == Status.FAILED
        # Expect a call with its credential refused
        env = {**project.env, "SQUAD_MCP_DIR": record["mcp_dir"], "SQUAD_MCP_TOKEN": record["mcp_token"],
               "SQUAD_CARD_ID": "G"}
        probe = subprocess.run([PY, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60, check=False)
        reply = json.loads(probe.stdout)
        assert reply["error"] and ("refused" in reply["text"] or "over" in reply["text"]), reply
    finally:
        gate.touch()
        kill_tree(proc)


PROBE = """
import asyncio, json, os, sys
from mcp import ClientSession, StdioServerParameters, stdio_client

async def main():
    params = StdioServerParameters(command=sys.executable, args=["-m", "squad", "mcp"], env=dict(os.environ))
    async with stdio_client(params) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        res = await s.call_tool("report_progress", {"percent": 70, "step": "after fencing"})
        print(json.dumps({"error": res.is_error, "text": "".join(getattr(c, "text", "") for c in res.content)}))

asyncio.run(main())
"""


def test_a_flood_of_sub_cards_is_bounded(tmp_path: Path) -> None:
    # Given sub-cards nesting at most 1 level and at most 3 per parent
    project = Project(tmp_path, SQUAD_SUBCARD_DEPTH="1", SQUAD_SUBCARD_LIMIT="3")
    many = [{"title": f"part {i}"} for i in range(101)]
    project.plan({"B": {"create": many}, "C": {"create": [{"title": "x"}] * 4},
                  "D": {"create": [{"title": "ok"}, {"title": "", "color": "red"}]},
                  "E": {"create": [{"title": "child"}]}, "E.1": {"create": [{"title": "grandchild"}]}})
    project.add({"card_id": "B", "title": "101"}, {"card_id": "C", "title": "4"}, {"card_id": "D", "title": "bad"},
                {"card_id": "E", "title": "nests"})
    # When they run
    project.orchestrate()
    # Expect each flood refused with its reason, nothing of it stored (all or nothing)
    assert "at most 100 sub-cards per call" in project.record("B")["create"]["text"]
    assert "at most 3 in all" in project.record("C")["create"]["text"]
    bad = project.record("D")["create"]["text"]
    assert "cards[1]: color: unknown field" in bad
    assert "nest at most 1 level" in project.record("E.1")["create"]["text"]
    ids = {c.card_id for c in project.store.list_cards()}
    assert ids == {"B", "C", "D", "E", "E.1"}
    assert all(project.record(cid)["create"]["error"] for cid in ("B", "C", "D", "E.1"))


def test_cancelling_a_parent_cancels_its_unfinished_sub_cards(project: Project) -> None:
    # Given a parent WAITING for a sub-card that waits on a gate
    gate = project.root / "gate"
    project.plan({"W": {"create": [{"title": "slow"}]}, "W.1": {"gate": str(gate)}})
    project.add({"card_id": "W", "title": "parent"})
    proc = project.start_orchestrator()
    try:
        wait_for(lambda: project.store.get_card("W").status == Status.WAITING
                 and project.store.get_cards(["W.1"]).get("W.1") is not None
                 and project.store.get_card("W.1").status == Status.IN_PROGRESS, 90, message="W waiting")
        # When the parent is cancelled
        cancelled = run_cli("cancel", "W", env=project.env)
        assert cancelled.returncode == 0, cancelled.stderr
        # Expect the sub-card cancelled too
        assert project.store.get_card("W.1").status == Status.CANCELLED
    finally:
        gate.touch()
        kill_tree(proc)


def test_celery_mode_runs_the_channel_in_the_worker(redis_url: str, tmp_path: Path,
                                                    start_worker: StartWorker) -> None:
    # Given a project on a real Redis with a real `squad worker`
    project = Project(tmp_path, USE_CELERY="true", SQUAD_REDIS_URL=redis_url)
    project.plan({"K": {"note": "from a worker", "create": [{"title": "child"}]}})
    project.add({"card_id": "K", "title": "celery parent"})
    start_worker(project.env)
    # When the orchestrator (Celery mode) runs until nothing is left
    done = run_cli("orchestrate", "--mode", "celery", "--once", "--wait", "--interval", "0.2", env=project.env,
                   timeout=180)
    # Expect the parent and its sub-card DONE, the note in the parent's log
    assert done.returncode == 0, done.stderr + done.stdout
    assert {c.card_id: c.status for c in project.store.list_cards()} == {"K": Status.DONE, "K.1": Status.DONE}
    assert not project.record("K")["note"]["error"]
    (run,) = project.store.list_runs("K")
    assert "NOTE from a worker" in project.store.run_log(run.id)


def call(env: dict[str, str], request: dict[str, Any]) -> dict[str, Any]:
    """One call on a channel's socket, as `squad mcp` makes it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(Path(env["SQUAD_MCP_DIR"], "mcp.sock")))
        sock.sendall(encode(request))
        return dict(json.loads(read_line(sock)))


def test_channels_share_one_acceptor_thread_and_a_closed_one_takes_no_call(tmp_path: Path) -> None:
    # Given three attempts' channels open in one process (three claimed cards)
    store = CardStore(f"sqlite:///{tmp_path / 'squad.db'}")
    settings = load_settings(channel_dir=tmp_path / "channels")
    try:
        channels = []
        for card_id in ("A", "B", "C"):
            add(store, card_id)
            assert store.enqueue(card_id, f"t-{card_id}", expected=[Status.TODO])
            claim = store.claim(card_id, f"t-{card_id}", "w1", 30)
            assert claim is not None
            channels.append(AttemptChannel(settings, store, None, claim, task_id=f"t-{card_id}",
                                           line=lambda _level, _text: None, progress=lambda _p, _s: None,
                                           event=lambda _e: None, fenced=threading.Event()))
        before = set(threading.enumerate())
        envs = [channel.open() for channel in channels]
        # When each is called, then the first two are closed
        replies = [call(env, {"token": channel.token, "tool": "get_card", "args": {}})
                   for env, channel in zip(envs, channels, strict=True)]
        for channel in channels[:2]:
            channel.close()
        # Expect every call answered with its own card, by one acceptor thread for all three (no
        # thread per attempt), and the closed channels gone: socket, folder, no call taken
        assert [reply["result"]["card"]["card_id"] for reply in replies] == ["A", "B", "C"]
        started = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        assert [t.name for t in started if not t.name.startswith("mcp-call")] in (["mcp-accept"], [])
        for env in envs[:2]:
            assert not Path(env["SQUAD_MCP_DIR"]).exists()
            with pytest.raises(OSError):
                call(env, {"token": "x", "tool": "get_card"})
        still = call(envs[2], {"token": channels[2].token, "tool": "get_card", "args": {}})
        assert still["result"]["card"]["card_id"] == "C"
        channels[2].close()
    finally:
        store.dispose()


def test_opening_channels_leaves_the_mode_of_what_other_threads_create_alone(tmp_path: Path) -> None:
    # Given attempts' channels opened and closed again and again in one thread (as a worker or the local
    # orchestrator opens one per attempt)
    store = CardStore(f"sqlite:///{tmp_path / 'squad.db'}")
    settings = load_settings(channel_dir=tmp_path / "channels")
    done = threading.Event()
    try:
        add(store, "U")
        assert store.enqueue("U", "t-U", expected=[Status.TODO])
        claim = store.claim("U", "t-U", "w1", 30)
        assert claim is not None

        def churn() -> None:
            try:
                for _ in range(300):
                    channel = AttemptChannel(settings, store, None, claim, task_id="t-U",
                                             line=lambda _level, _text: None, progress=lambda _p, _s: None,
                                             event=lambda _e: None, fenced=threading.Event())
                    channel.open()
                    channel.close()
            finally:
                done.set()

        thread = threading.Thread(target=churn)
        thread.start()
        # When another thread creates folders meanwhile (another attempt's workdir)
        made = 0
        modes = set()
        while not done.is_set():
            folder = tmp_path / "work" / f"W-{made}"
            folder.mkdir(parents=True)
            modes.add(folder.stat().st_mode & 0o777)
            made += 1
        thread.join(30)
        # Expect every folder with the mode the process's umask gives (an attempt's workdir its sandbox
        # can enter), never one narrowed while a channel bound its socket
        umask = os.umask(0)
        os.umask(umask)
        assert made > 100 and modes == {0o777 & ~umask}, (made, {oct(m) for m in modes})
    finally:
        store.dispose()
