"""A redis-server process a test owns, so it may stop, kill and restart the broker under real workers."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis

from squad.ops.embedded_redis import EmbeddedRedis, free_port


@dataclass
class RedisServer:
    """A redis-server process the tests own: they may stop and restart it."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    aof: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, *, aof: bool | None = None) -> None:
        if aof is not None:
            self.aof = aof
        server = EmbeddedRedis(self.workdir, self.port, aof=self.aof, appendfsync="always")
        server.start()
        self.proc = server.proc

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        self.proc.wait(timeout=15)
        self.proc = None

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(port=self.port, db=db, decode_responses=True, socket_timeout=5)
