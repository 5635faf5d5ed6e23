"""Bare Celery baseline: the same worker settings, a task that only runs `true`."""

from __future__ import annotations

import os
import subprocess

import redis
from celery import Celery

broker = os.environ["BENCH_BROKER"]
app = Celery("baseline", broker=f"{broker}/0", backend=f"{broker}/1")
app.conf.update(task_serializer="json", accept_content=["json"], task_acks_late=True,
                task_reject_on_worker_lost=True, worker_prefetch_multiplier=1, worker_max_tasks_per_child=50,
                task_compression="gzip", broker_transport_options={"visibility_timeout": 2400})
_counter = redis.Redis.from_url(f"{broker}/3")


@app.task(name="baseline.run_true")
def run_true() -> int:
    rc = subprocess.run(["true"], check=False).returncode
    _counter.incr("baseline:done")
    return rc
