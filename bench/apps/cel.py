"""Celery side of the benchmark: the same two no-op tasks, on Redis.

``BENCH_REDIS_URL`` names the private Redis the benchmark started: db 0 is the broker,
db 1 the result backend. Each task INCRs ``bench:done`` (db 0) so the benchmark knows
when every task has run (Celery acks before running, so an empty queue is not enough).
"""

from __future__ import annotations

import os

import redis
from celery import Celery

from bench.apps._mark import mark_first

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6399")
COUNTER_KEY = "bench:done"

app = Celery("bench", broker=f"{REDIS_URL}/0", backend=f"{REDIS_URL}/1")
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
)

_client: redis.Redis | None = None
_client_pid: int | None = None


def _counter_client() -> redis.Redis:
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        _client = redis.Redis.from_url(f"{REDIS_URL}/0")
        _client_pid = os.getpid()
    return _client


@app.task(name="bench.noop")
def noop() -> None:
    """Do nothing but count (the result, ``None``, is stored)."""
    mark_first()
    _counter_client().incr(COUNTER_KEY)


@app.task(name="bench.noop_noresult", ignore_result=True)
def noop_noresult() -> None:
    """Do nothing but count; store no result."""
    mark_first()
    _counter_client().incr(COUNTER_KEY)
