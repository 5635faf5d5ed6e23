"""A taken port is one line on stderr and exit 2, never a hang; the API's shutdown is bounded."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from squad.api.ws import EventHub
from squad.core.namespace import RedisKeys
from support.cli import run_cli, squad_env


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process (here: this test) listens on."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    yield sock.getsockname()[1]
    sock.close()


def test_serve_on_a_taken_port_is_one_line_and_exit_2(taken_port: int, redis_url: str, tmp_path: Path) -> None:
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=f"sqlite:///{tmp_path / 'squad.db'}")
    res = run_cli("serve", "--port", str(taken_port), env=env, timeout=90)  # it used to hang 4 runs out of 5
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == (f"squad: error: port {taken_port} on 127.0.0.1 is already in use by another "
                                  "process (stop it or choose another port with --port)"), res.stderr


def test_up_on_a_taken_port_starts_nothing(taken_port: int, tmp_path: Path) -> None:
    # Given no Redis answering (up would start an embedded one) and the API port taken
    env = squad_env(SQUAD_REDIS_URL="redis://127.0.0.1:1", SQUAD_DATABASE_URL=f"sqlite:///{tmp_path / 'squad.db'}")
    res = run_cli("up", "--demo", "--port", str(taken_port), env=env, timeout=90)
    # Expect one line, exit 2, and nothing started: no embedded Redis, no demo store, no URL advertised
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        f"squad: error: port {taken_port} on 127.0.0.1 is already in use by another process "
        "(stop it or choose another port with --port)"], res.stderr
    assert not (tmp_path / ".squad" / "redis").exists() and not (tmp_path / ".squad" / "demo.db").exists()


def test_event_hub_stop_is_bounded_when_the_reader_ignores_cancellation(redis_url: str) -> None:
    """A reader stuck in a socket read (seen with uvloop) once held the server's shutdown forever."""

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        hub = EventHub(client, RedisKeys.for_instance("test"))

        release = asyncio.Event()

        async def stubborn_reader() -> None:
            while not release.is_set():
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    continue  # as a read that does not notice the cancel

        reader = asyncio.create_task(stubborn_reader())
        hub._task = reader
        await asyncio.sleep(0)
        stopper = asyncio.create_task(hub.stop(timeout_s=0.5))
        done, _ = await asyncio.wait({stopper}, timeout=30)
        release.set()
        await asyncio.gather(reader, stopper)
        await client.aclose()
        assert stopper in done, "EventHub.stop() waited for a reader that ignores cancellation"

    asyncio.run(scenario())
