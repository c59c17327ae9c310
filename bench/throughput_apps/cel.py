"""Celery side of the throughput benchmark (``-A bench.throughput_apps.cel``): the same tasks.

``BENCH_BROKER_URL`` / ``BENCH_BACKEND_URL`` name the private servers; ``BENCH_CONFIRM=1``
turns on publisher confirms (RabbitMQ), so Celery publishes under the same guarantee as tqcore.
"""

from __future__ import annotations

import os

from celery import Celery

from bench.throughput_apps.counter import hit

app = Celery("tb", broker=os.environ.get("BENCH_BROKER_URL"),
             backend=os.environ.get("BENCH_BACKEND_URL"))
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
)
if os.environ.get("BENCH_CONFIRM") == "1":
    app.conf.broker_transport_options = {"confirm_publish": True}


@app.task(name="tb.noop", ignore_result=True)
def noop() -> None:
    """The drain task: no result, counted."""
    hit()


@app.task(name="tb.rtt")
def rtt() -> int:
    """The round-trip task: its result is stored and waited for."""
    return 1


@app.task(name="tb.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="tb.tsum")
def tsum(numbers: list[int]) -> int:
    return sum(numbers)
