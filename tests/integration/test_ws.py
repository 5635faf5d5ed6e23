"""`WS /ws/tasks` against a real uvicorn server and redis-server; end to end with real workers.

Events are written the way workers write them (EventBus over `task_updates`), or by real
`squad worker` processes running a fake agent.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from squad.core.cards import parse_card
from squad.core.settings import Settings, load_settings
from squad.core.statuses import Status
from squad.live.connections import stream_key
from squad.live.events import EventBus, log_event, progress_event, status_event
from support.api import ApiServer, run_api
from support.cli import squad_env
from support.event_contract import problems
from support.fake_agents import sandbox_toml
from support.paths import AGENTS
from support.processes import read_pid, wait_for
from support.redis_server import RedisServer
from support.store import redis_keys
from support.workers import Worker

PY = sys.executable
StartWorker = Callable[..., Worker]


# ---- fixtures and helpers ---------------------------------------------------------------------
@pytest.fixture
def bus(settings: Settings) -> Iterator[EventBus]:
    event_bus = EventBus(settings.events, redis_keys(settings.database_url))
    yield event_bus
    event_bus.close()


@contextmanager
def open_socket(api: ApiServer, query: str = "", **kwargs: Any) -> Iterator[ClientConnection]:
    """Connect and consume the `connected` greeting."""
    with connect(api.ws_url + query, open_timeout=10, **kwargs) as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert hello["type"] == "connected" and hello["timestamp"] and hello["message"]
        yield ws


def receive(ws: ClientConnection, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    out: list[dict[str, Any]] = []
    while len(out) < count:
        out.append(json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic()))))
    return out


def publish(bus: EventBus, card_id: str, n: int, start: int = 0, **extra: Any) -> list[str]:
    """n progress events in one pipeline; returns their stream ids."""
    events = [{**progress_event(card_id, "t1", progress=start + i, current_step=f"step {start + i}", elapsed=0.5,
                                worker="w@test", event_id=f"{card_id}:{start + i}"), **extra}
              for i in range(n)]
    with bus.redis.pipeline(transaction=False) as pipe:
        for ev in events:
            pipe.xadd(bus.keys.task_updates, ev)
        return [str(i) for i in pipe.execute()]


# ---- protocol ---------------------------------------------------------------------------------
def test_first_message_is_connected_and_ping_is_answered_pong(api: ApiServer) -> None:
    with open_socket(api) as ws:
        ws.send("ping")
        assert ws.recv(timeout=10) == "pong"
        ws.send("something else")  # ignored
        ws.send("ping")
        assert ws.recv(timeout=10) == "pong"


def test_every_event_arrives_in_order_with_its_stream_id_and_typed_fields(api: ApiServer, bus: EventBus) -> None:
    with open_socket(api) as ws1, open_socket(api) as ws2:
        # When a worker publishes 300 events
        ids = publish(bus, "W-1", 300)
        log_id = bus.publish(log_event("W-1", "t1", level="INFO", message="hello", event_id="W-1:log"))
        status_id = bus.publish(status_event("W-1", Status.DONE, "t1", attempt=1, event_id="W-1:st"))

        # Expect both sockets to get all of them, in stream order, as JSON with `id`
        for ws in (ws1, ws2):
            got = receive(ws, 302)
            assert [e["id"] for e in got] == [*ids, log_id, status_id]
            first = got[0]
            assert {"id", "type", "card_id", "task_id", "timestamp", "progress", "current_step", "elapsed",
                    "worker"} <= set(first)
            assert (first["type"], first["progress"], first["elapsed"]) == ("progress", 0, 0.5)
            assert (got[300]["level"], got[300]["message"]) == ("INFO", "hello")
            assert (got[301]["status"], got[301]["attempt"]) == ("DONE", 1)


def test_card_id_filter_sends_only_that_cards_events(api: ApiServer, bus: EventBus) -> None:
    with open_socket(api, "?card_id=F-2") as ws:
        publish(bus, "F-1", 5)
        wanted = publish(bus, "F-2", 3)
        publish(bus, "F-1", 5, start=5)
        marker = publish(bus, "F-2", 1, start=3)
        got = receive(ws, 4)
    assert [e["id"] for e in got] == [*wanted, *marker]
    assert {e["card_id"] for e in got} == {"F-2"}


def test_reconnect_with_since_misses_nothing_and_repeats_nothing(api: ApiServer, bus: EventBus) -> None:
    # Given a client that saw the first 10 events, then went away
    with open_socket(api) as ws:
        first = publish(bus, "S-1", 10)
        seen = receive(ws, 10)
    assert [e["id"] for e in seen] == first
    # ... while 50 more were published
    missed = publish(bus, "S-1", 50, start=10)

    # When it reconnects with since=<last id seen>, and more events keep coming
    with open_socket(api, f"?since={seen[-1]['id']}") as ws:
        live = publish(bus, "S-1", 5, start=60)
        got = receive(ws, 55)
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.5)

    # Expect exactly the missed ones, then the live ones, in order, no duplicates
    assert [e["id"] for e in got] == [*missed, *live]


def test_since_zero_replays_the_stream_and_bad_since_is_refused(api: ApiServer, bus: EventBus) -> None:
    ids = publish(bus, "Z-1", 3)
    with open_socket(api, "?since=0") as ws:
        assert [e["id"] for e in receive(ws, 3)] == ids
    for bad in ("?since=abc", "?card_id=no%20such%20id"):
        with connect(api.ws_url + bad, open_timeout=10) as ws, pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


def test_duplicate_event_ids_from_a_retried_write_are_delivered_once(api: ApiServer, bus: EventBus) -> None:
    with open_socket(api) as ws:
        ev = progress_event("DUP-1", "t1", progress=40, current_step="", elapsed=0.0, worker="w@test", event_id="tok:1")
        bus.publish_many([ev, ev])
        after = bus.publish(progress_event("DUP-1", "t1", progress=50, current_step="", elapsed=0.0, worker="w@test",
                                           event_id="tok:2"))
        got = receive(ws, 2)
    assert [e["event_id"] for e in got] == ["tok:1", "tok:2"] and got[1]["id"] == after
    with open_socket(api, "?since=0") as ws:  # and when replayed
        assert [e["event_id"] for e in receive(ws, 2)] == ["tok:1", "tok:2"]


class RawSocket:
    """A WebSocket client that can stop reading: a plain socket with a tiny receive buffer
    (no library thread keeps draining it), speaking just enough of RFC 6455 to read frames."""

    def __init__(self, api: ApiServer, query: str = "") -> None:
        host, port = api.url.removeprefix("http://").split(":")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(30)
        self.sock.connect((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws/tasks{query} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("socket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame (servers never mask)."""
        b0, b1 = self._take(2)
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._take(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._take(8))[0]
        return b0 & 0x0F, self._take(length)

    def close(self) -> None:
        self.sock.close()


def test_a_slow_client_is_closed_with_a_reason_while_others_get_everything(settings: Settings,
                                                                          bus: EventBus) -> None:
    # Given a server with small per-socket queues, a fast client and one that stops reading
    with run_api(settings, ws_queue_size=200) as api, open_socket(api) as fast:
        slow = RawSocket(api)
        try:
            assert json.loads(slow.frame()[1])["type"] == "connected"
            # When 20,000 events of ~1 kB are published (more than the socket buffers hold)
            ids: list[str] = []
            received: list[str] = []
            for batch in range(20):
                ids += publish(bus, "SLOW", 1000, start=batch * 1000, note="x" * 1000)
                received += [e["id"] for e in receive(fast, 1000, timeout=30)]

            # Expect the fast client to have every event, in order, while the slow one was dropped
            assert received == ids
            assert api.state.hub.count == 1
            # ... and, once it reads, the slow one to find a close 4008 naming the last id it was sent
            slow_ids: list[str] = []
            while True:
                opcode, payload = slow.frame()
                if opcode == 0x8:
                    break
                slow_ids.append(json.loads(payload)["id"])
        finally:
            slow.close()
        code, reason = struct.unpack("!H", payload[:2])[0], payload[2:].decode()
        assert code == 4008, (code, reason)
        since = reason.split("since=", 1)[1]
        assert slow_ids == ids[:len(slow_ids)] and since == slow_ids[-1] and len(slow_ids) < len(ids)

        # ... and reconnecting with that id gives it exactly the rest
        with open_socket(api, f"?since={since}") as again:
            rest = [e["id"] for e in receive(again, len(ids) - len(slow_ids), timeout=60)]
        assert slow_ids + rest == ids


def test_socket_needs_the_token_when_one_is_set(redis_url: str, sqlite_url: str) -> None:
    settings = load_settings(redis_url=redis_url, database_url=sqlite_url, api_token="tok-123")
    with run_api(settings) as api:
        for query in ("", "?token=wrong", "?token="):
            with pytest.raises(InvalidStatus) as rejected, connect(api.ws_url + query, open_timeout=10):
                pass
            assert rejected.value.response.status_code == 401
        with open_socket(api, "?token=tok-123") as ws:
            ws.send("ping")
            assert ws.recv(timeout=10) == "pong"
        with open_socket(api, additional_headers={"Authorization": "Bearer tok-123"}):
            pass


def test_health_counts_open_sockets(api: ApiServer) -> None:
    with api.client() as http:
        with open_socket(api), open_socket(api):
            assert http.get("/health").json()["active_websockets"] == 2
        wait_for(lambda: http.get("/health").json()["active_websockets"] == 0, 10, message="sockets closed")


def test_reader_survives_a_redis_restart(api: ApiServer, redis_server: RedisServer, settings: Settings) -> None:
    with open_socket(api) as ws:
        bus = EventBus(settings.events, redis_keys(settings.database_url))
        before = publish(bus, "RR-1", 3)
        assert [e["id"] for e in receive(ws, 3)] == before

        # When Redis restarts empty (the stream is gone, its ids start over)
        redis_server.stop()
        redis_server.start(aof=False)
        bus.close()
        bus = EventBus(settings.events, redis_keys(settings.database_url))
        after = publish(bus, "RR-1", 3, start=3)

        # Expect the reader to notice and deliver the new stream's events
        assert [e["id"] for e in receive(ws, 3, timeout=30)] == after
        bus.close()


# ---- end to end with real workers -------------------------------------------------------------
def _worker_env(settings: Settings, tmp_path: Path, agent: list[str]) -> dict[str, str]:
    (tmp_path / "squad.toml").write_text(
        f'{sandbox_toml(tmp_path)}[agents.fake]\ncommand = {json.dumps(agent)}\nparser = "markers"\n', encoding="utf-8")
    return squad_env(SQUAD_REDIS_URL=settings.redis_url, SQUAD_DATABASE_URL=settings.database_url,
                     SQUAD_LEASE_S="5", SQUAD_RETRY_BACKOFF="1")


def _orchestrate_once(env: dict[str, str]) -> None:
    res = subprocess.run([PY, "-m", "squad", "orchestrate", "--once", "--mode", "celery"], env=env,
                         capture_output=True, text=True, timeout=90, check=False)
    assert res.returncode == 0, res.stderr


def test_a_card_run_by_a_real_worker_streams_ordered_progress_and_shows_everywhere(
        api: ApiServer, settings: Settings, tmp_path: Path, start_worker: StartWorker) -> None:
    # Given a card for a fake agent that prints progress markers, and a real worker
    env = _worker_env(settings, tmp_path, [PY, str(AGENTS / "markers.py"), "0.1"])
    api.state.store.add_cards([parse_card({"card_id": "E2E-1", "title": "run me", "agent": "fake"})])
    worker = start_worker(env, concurrency=1)

    with open_socket(api, "?card_id=E2E-1") as ws, api.client() as http:
        # When the orchestrator sends it to the worker
        _orchestrate_once(env)
        events: list[dict[str, Any]] = []
        while not (events and events[-1]["type"] == "status" and events[-1]["status"] == "DONE"):
            events.append(json.loads(ws.recv(timeout=60)))

        # Expect the socket to have shown the whole run, in order
        statuses = [e["status"] for e in events if e["type"] == "status"]
        assert statuses == ["QUEUED", "IN_PROGRESS", "DONE"]
        progress = [e["progress"] for e in events if e["type"] == "progress"]
        assert progress == sorted(progress) and progress[0] == 0 and progress[-1] == 100
        assert {0, 10, 15, 20, 25, 30, 45, 90, 100} <= set(progress)
        assert any(e["type"] == "log" and e["message"] == "all good" for e in events)
        assert [e["id"] for e in events] == sorted((e["id"] for e in events), key=stream_key)

        # ... and the REST views agree
        card = http.get("/api/cards/enhanced").json()[0]
        assert card["status"] == "DONE" and card["celery_task"]["status"] == "SUCCESS"
        assert card["celery_task"]["worker"] == worker.hostname and card["logs_available"]
        # Celery stores the task's result after the task returns, a moment after the DONE event
        def with_result() -> dict[str, Any] | None:
            task = http.get("/api/cards/enhanced").json()[0]["celery_task"]
            return task if task["result"] is not None else None

        task = wait_for(with_result, 30, interval=0.2, message="Celery's result of the task stored")
        assert isinstance(task, dict) and task["result"]["status"] == "DONE"
        logs = http.get("/api/tasks/E2E-1/logs").json()
        assert "all good" in [e["message"] for e in logs]

        def worker_seen() -> dict[str, Any] | None:
            body = http.get("/api/workers").json()
            found = [w for w in body["workers"] if w["name"] == worker.hostname and w["processed"] >= 1]
            return found[0] if found else None

        seen = wait_for(worker_seen, 30, interval=0.5, message="worker listed with its processed count")
        assert isinstance(seen, dict) and seen["status"] == "online" and seen["last_heartbeat"]
        health = wait_for(lambda: (h := http.get("/health").json())["celery"] == "connected" and h, 30, 0.5)
        assert isinstance(health, dict) and health["celery_workers"] >= 1 and health["status"] == "healthy"


def test_events_of_real_workers_have_exactly_the_fields_docs_api_md_lists(
        api: ApiServer, settings: Settings, tmp_path: Path, start_worker: StartWorker) -> None:
    # Given cards added through the API for three fake agents (progress markers, a failure, a burst
    # of lines: more than a batch's share of the feed) and a real worker
    agents = {"EV-OK": ("marks", [PY, str(AGENTS / "markers.py")], "DONE"),
              "EV-FAIL": ("fails", [PY, str(AGENTS / "fail.py")], "FAILED"),
              "EV-BURST": ("burst", [PY, str(AGENTS / "lines.py"), "2000"], "DONE")}
    tables = (f'[agents.{name}]\ncommand = {json.dumps(argv)}\nparser = "markers"\n'
              for name, argv, _ in agents.values())
    (tmp_path / "squad.toml").write_text(sandbox_toml() + "".join(tables), encoding="utf-8")
    env = squad_env(SQUAD_REDIS_URL=settings.redis_url, SQUAD_DATABASE_URL=settings.database_url)
    start_worker(env, concurrency=1)

    with open_socket(api) as ws, api.client() as http:
        for card_id, (agent, _argv, _final) in agents.items():
            added = http.post("/api/cards", json={"card_id": card_id, "title": card_id, "agent": agent,
                                                  "max_retries": 0})
            assert added.status_code == 201, added.text
        # When the orchestrator sends them to the worker and each one ends
        _orchestrate_once(env)
        events: list[dict[str, Any]] = []
        ended: set[str] = set()
        while ended != set(agents):
            events.append(json.loads(ws.recv(timeout=60)))
            if events[-1]["type"] == "status" and events[-1]["status"] == agents[events[-1]["card_id"]][2]:
                ended.add(events[-1]["card_id"])

    # Expect every event (the API's, the orchestrator's, the worker's) to have exactly the fields
    # docs/api.md lists for its type, with the types it states
    assert [(e, problems(e)) for e in events if problems(e)] == []
    # ... and the run to have shown every type and every optional field at least once
    seen = {(e["type"], name) for e in events for name in e}
    assert {("status", "attempt"), ("status", "worker"), ("status", "error"), ("status", "event_id"),
            ("progress", "event_id"), ("log", "event_id"), ("log", "skipped")} <= seen
    assert [e["status"] for e in events if e["type"] == "status" and e["card_id"] == "EV-FAIL"] == [
        "TODO", "QUEUED", "IN_PROGRESS", "FAILED"]


def test_forced_retry_of_a_running_card_ends_its_agent_and_runs_it_again(
        api: ApiServer, settings: Settings, tmp_path: Path, start_worker: StartWorker) -> None:
    # Given a card whose agent hangs, running on a real worker
    env = _worker_env(settings, tmp_path, [PY, str(AGENTS / "hang.py"), "{workdir}/pid-{attempt}"])
    store = api.state.store
    store.add_cards([parse_card({"card_id": "FR-1", "title": "hang", "agent": "fake"})])
    start_worker(env, concurrency=1)
    _orchestrate_once(env)
    pid_file = settings.workdir / "FR-1" / "pid-1"
    wait_for(pid_file.exists, 60, message="agent started")
    agent = psutil.Process(read_pid(pid_file))
    old_task = store.get_card("FR-1").celery_task_id

    with api.client() as http:
        # When it is retried without force, then with force
        refused = http.post("/api/tasks/FR-1/retry", json={"force": False})
        res = http.post("/api/tasks/FR-1/retry", json={"force": True})

        # Expect 400, then the old agent ended and a new attempt running under a new task id
        assert refused.status_code == 400
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["old_task_id"] == old_task and body["new_task_id"] != old_task
        wait_for(lambda: not agent.is_running() or agent.status() == psutil.STATUS_ZOMBIE, 20,
                 message="old agent ended")
        wait_for((settings.workdir / "FR-1" / "pid-2").exists, 60, message="second attempt started")
        card = store.get_card("FR-1")
        assert card.status == Status.IN_PROGRESS and card.celery_task_id == body["new_task_id"]

        # ... and cancel ends it for good (the answer comes once its process group is gone)
        second = psutil.Process(read_pid(settings.workdir / "FR-1" / "pid-2"))
        cancelled = http.post("/api/tasks/FR-1/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["card"]["status"] == "CANCELLED"
        wait_for(lambda: not second.is_running() or second.status() == psutil.STATUS_ZOMBIE, 5,
                 message="second agent ended")
        time.sleep(1.5)
        assert store.get_card("FR-1").status == Status.CANCELLED
        enhanced = http.get("/api/cards/enhanced").json()[0]
        assert enhanced["celery_task"]["status"] == "REVOKED"
        assert [r["status"] for r in http.get("/api/cards/FR-1/runs").json()] == ["cancelled", "cancelled"]


def test_unknown_http_paths_do_not_break_the_socket(api: ApiServer) -> None:
    assert httpx.get(api.url + "/ws/nothing").status_code == 404
    with open_socket(api) as ws:
        ws.send("ping")
        assert ws.recv(timeout=10) == "pong"
