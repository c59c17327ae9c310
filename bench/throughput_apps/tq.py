"""tqcore side of the throughput benchmark (``-A bench.throughput_apps.tq``).

``BENCH_BROKER_URL`` / ``BENCH_BACKEND_URL`` name the private servers the benchmark started.
"""

from __future__ import annotations

import os

from bench.throughput_apps.counter import hit
from tqcore import App

app = App("tb", broker=os.environ.get("BENCH_BROKER_URL"),
          backend=os.environ.get("BENCH_BACKEND_URL"))


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
