"""The app the remote-control suite's workers run: tasks that keep their own ledger.

Workers are started as a user would start them, from this directory (it is on
``sys.path`` as the worker's cwd)::

    TQ_BROKER_URL=sqlite:////tmp/x/tq.db TQ_LEDGER=/tmp/x/ledger.jsonl \\
        python3 -m tqcore -A remote_app worker -P prefork -c 2 -n w1@%h

The test process imports the same file as ``tests.remote.remote_app`` (task names are
explicit, so both spellings register the same tasks). ``App("remote")`` is given no
URLs: a worker reads ``TQ_BROKER_URL`` (the result backend defaults to the same SQLite
file); the test process sets ``app.conf`` explicitly.

Every task body appends one JSON line per event to ``$TQ_LEDGER`` (``O_APPEND``, one
``write`` per line)::

    {"ev": "start", "id": ..., "name": ..., "args": [...], "retries": n,
     "host": worker node name, "pid": ..., "t": epoch seconds}

The tests count executions from this file, never from what tqcore reports.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from tqcore import App

app = App("remote")


def ledger(task: Any, args: list[Any], event: str = "start") -> None:
    """Append one ledger line for the running task."""
    req = task.request
    line = json.dumps({"ev": event, "id": req.id, "name": task.name, "args": args,
                       "retries": req.retries or 0, "host": req.hostname,
                       "pid": os.getpid(), "t": time.time()})
    fd = os.open(os.environ["TQ_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def runs_of(task_id: str) -> int:
    """How many times the ledger says task ``task_id`` started (this run included)."""
    try:
        with open(os.environ["TQ_LEDGER"]) as fh:
            return sum(1 for line in fh if json.loads(line)["id"] == task_id)
    except FileNotFoundError:
        return 0


@app.task(name="remote.add", bind=True)
def add(self: Any, x: Any, y: Any) -> Any:
    ledger(self, [x, y])
    return x + y


@app.task(name="remote.limited", bind=True)
def limited(self: Any, i: int) -> int:
    """No rate limit of its own: the test sets one with ``tqcore control rate_limit``."""
    ledger(self, [i])
    return i


@app.task(name="remote.boom", bind=True)
def boom(self: Any, i: int) -> None:
    ledger(self, [i])
    raise RuntimeError(f"boom {i}")


@app.task(name="remote.retry_once", bind=True, max_retries=3)
def retry_once(self: Any, i: int) -> int:
    """``self.retry`` on the first run, succeeds on the second."""
    ledger(self, [i])
    if not self.request.retries:
        raise self.retry(exc=KeyError(f"not yet {i}"), countdown=0.2)
    return i * 10


@app.task(name="remote.flaky", bind=True)
def flaky(self: Any, x: Any, tag: Any) -> list[Any]:
    """Fails with ValueError on its first run (by the ledger), succeeds afterwards."""
    ledger(self, [x, tag])
    if runs_of(self.request.id) < 2:
        raise ValueError(f"flaky first run {x} {tag}")
    return [x, tag]


@app.task(name="remote.tsum", bind=True)
def tsum(self: Any, values: list[Any]) -> Any:
    ledger(self, [values])
    return sum(values)


@app.task(name="remote.echo", bind=True)
def echo(self: Any, value: Any) -> Any:
    ledger(self, [value])
    return value
