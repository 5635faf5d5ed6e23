"""A real `squad worker` subprocess as the tests hold it (started by conftest's `start_worker`)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass
class Worker:
    """A real `squad worker` (supervised Celery worker) subprocess."""

    proc: subprocess.Popen[bytes]
    hostname: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def celery_children(self) -> list[psutil.Process]:
        return [p for p in psutil.Process(self.proc.pid).children(recursive=True) if "celery" in _cmdline(p)]


def _cmdline(proc: psutil.Process) -> str:
    """Its command line; "" for one gone or a zombie (an agent's process that just ended, say)."""
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


#: conftest's `start_worker` fixture, as tests annotate it.
StartWorker = Callable[..., Worker]
