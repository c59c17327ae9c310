"""tqcore side of the benchmark: two no-op tasks (results stored / ignored).

The broker comes from ``TQ_BROKER_URL`` (the benchmark points it at a fresh SQLite file).
"""

from __future__ import annotations

from bench.apps._mark import mark_first
from tqcore import App

app = App("bench")


@app.task(name="bench.noop")
def noop() -> None:
    """Do nothing (the result, ``None``, is stored)."""
    mark_first()


@app.task(name="bench.noop_noresult", ignore_result=True)
def noop_noresult() -> None:
    """Do nothing, store no result."""
    mark_first()
