"""Bare Celery baseline: default settings plus `acks_late` and prefetch 1, tasks that only run `true`."""

from __future__ import annotations

import os
import subprocess
import time

import redis
from celery import Celery

broker = os.environ["BENCH_BROKER"]
app = Celery("baseline", broker=f"{broker}/0", backend=f"{broker}/1")
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1)
_counter = redis.Redis.from_url(f"{broker}/3")


@app.task(name="baseline.run_true")
def run_true() -> int:
    rc = subprocess.run(["true"], check=False).returncode
    _counter.incr("baseline:done")
    return rc


@app.task(name="baseline.chain_step")
def chain_step() -> int:
    """One link of a chain: records its start and end (epoch seconds) for the hop figure."""
    started = time.time()
    rc = subprocess.run(["true"], check=False).returncode
    _counter.rpush("baseline:chain", f"{started} {time.time()}")
    return rc
