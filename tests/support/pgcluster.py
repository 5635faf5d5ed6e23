"""A PostgreSQL cluster of the test's own, so a test may stop and restart its database.

initdb in a temp dir, pg_ctl on a free port: the machine's PostgreSQL that other tests use is never touched.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from squad.ops.embedded_redis import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/{name})")
    return found[-1]


def _as_postgres(*argv: str) -> list[str]:
    """Run as the `postgres` user when we are root (PostgreSQL refuses to run as root)."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)


@dataclass
class PgCluster:
    """One private cluster: trust auth on 127.0.0.1:<port>, data in a temp dir removed on `destroy`."""

    root: Path
    port: int

    @classmethod
    def create(cls) -> PgCluster:
        root = Path(tempfile.mkdtemp(prefix="squad-pg-"))
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        cluster = cls(root, free_port())
        subprocess.run(_as_postgres(_bin("initdb"), "-D", str(cluster.data), "--auth=trust", "-U", "postgres",
                                    "--no-sync"), check=True, capture_output=True, timeout=120)
        cluster.start()
        return cluster

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(_as_postgres(_bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
                                    str(self.root / "server.log"), "-w", "-t", "60", "start"),
                       check=True, capture_output=True, timeout=90)

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(_as_postgres(_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"),
                       check=False, capture_output=True, timeout=90)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
