"""The integration suite's app: tasks that leave a ledger independent of tqcore.

A worker process runs this module as a user would run theirs::

    TQ_BROKER_URL=sqlite:////tmp/x/tq.db TQ_RESULT_BACKEND=sqlite:////tmp/x/tq.db \\
    TQ_LEDGER=/tmp/x/ledger.log python3 -m tqcore -A tests.integration.proj worker ...

``App("integ")`` is given no URLs: a worker process reads ``TQ_BROKER_URL`` /
``TQ_RESULT_BACKEND``; the test process sets ``app.conf`` explicitly (``conftest.py``).

Every task body appends lines to the file named by ``TQ_LEDGER`` with ``O_APPEND``
(one ``write`` per line, so lines of concurrent writers never interleave)::

    start <task_id> <delivery attempt> <retries> <pid> <epoch time>
    end   <task_id> <delivery attempt> <retries> <pid> <epoch time>

``start`` is written first thing in the body, ``end`` right before it returns, so a
body interrupted by SIGKILL leaves a ``start`` without an ``end``. The test counts
executions from this file, never from what tqcore says about itself.
"""

from __future__ import annotations

import os
import time
from typing import Any

from tqcore import App
from tqcore.exceptions import Reject

app = App("integ")
# Set by a test through the workers' environment (test_dedupe.py).
app.conf.worker_deduplicate_successful_tasks = os.environ.get("INTEG_DEDUPE") == "1"
app.conf.task_routes = {
    "integ.t_a": {"queue": "a"},
    "integ.t_b": {"queue": "b"},
}


def ledger(event: str, task: Any) -> None:
    """Append one ledger line for the running task (``event`` is ``start`` or ``end``)."""
    req = task.request
    line = (f"{event} {req.id} {req.attempts or 0} {req.retries or 0} {os.getpid()}"
            f" {time.time():.6f}\n")
    fd = os.open(os.environ["TQ_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class MyError(Exception):
    """A custom exception the tasks do not declare in ``throws``."""


@app.task(name="integ.add", bind=True)
def add(self: Any, x: Any, y: Any) -> Any:
    ledger("start", self)
    ledger("end", self)
    return x + y


@app.task(name="integ.noop", bind=True)
def noop(self: Any, label: Any = None) -> Any:
    ledger("start", self)
    ledger("end", self)
    return label


@app.task(name="integ.sleepy_late", bind=True, acks_late=True)
def sleepy_late(self: Any, seconds: float) -> str:
    ledger("start", self)
    time.sleep(seconds)
    ledger("end", self)
    return "slept"


@app.task(name="integ.sleepy_early", bind=True, acks_late=False)
def sleepy_early(self: Any, seconds: float) -> str:
    ledger("start", self)
    time.sleep(seconds)
    ledger("end", self)
    return "slept"


@app.task(name="integ.slow_first", bind=True, acks_late=True)
def slow_first(self: Any, seconds: float) -> str:
    """Sleeps ``seconds`` on its first delivery only (so a re-run is quick)."""
    ledger("start", self)
    time.sleep(seconds if (self.request.attempts or 1) <= 1 else 0.1)
    ledger("end", self)
    return "done"


@app.task(name="integ.short_late", bind=True, acks_late=True)
def short_late(self: Any, i: int, seconds: float = 0.01) -> int:
    ledger("start", self)
    time.sleep(seconds)
    ledger("end", self)
    return i


@app.task(name="integ.short_early", bind=True, acks_late=False)
def short_early(self: Any, i: int, seconds: float = 0.01) -> int:
    ledger("start", self)
    time.sleep(seconds)
    ledger("end", self)
    return i


@app.task(name="integ.limited", bind=True, rate_limit="5/s")
def limited(self: Any, i: int) -> int:
    ledger("start", self)
    ledger("end", self)
    return i


@app.task(name="integ.t_a", bind=True)
def t_a(self: Any) -> str:
    ledger("start", self)
    ledger("end", self)
    return "a"


@app.task(name="integ.t_b", bind=True)
def t_b(self: Any) -> str:
    ledger("start", self)
    ledger("end", self)
    return "b"


@app.task(name="integ.tracked", bind=True, track_started=True)
def tracked(self: Any, seconds: float) -> str:
    ledger("start", self)
    time.sleep(seconds)
    ledger("end", self)
    return "tracked"


@app.task(name="integ.ignored", bind=True, ignore_result=True)
def ignored(self: Any) -> str:
    ledger("start", self)
    ledger("end", self)
    return "ignored"


@app.task(name="integ.retry_then_ok", bind=True, max_retries=5)
def retry_then_ok(self: Any, times: int, countdown: float = 0.5) -> int:
    ledger("start", self)
    if self.request.retries < times:
        raise self.retry(exc=KeyError("not yet"), countdown=countdown)
    ledger("end", self)
    return int(self.request.retries)


@app.task(name="integ.always_retry", bind=True, max_retries=2)
def always_retry(self: Any) -> None:
    ledger("start", self)
    raise self.retry(exc=ValueError("boom: gave up"), countdown=0.1)


@app.task(name="integ.custom_fail", bind=True)
def custom_fail(self: Any) -> None:
    ledger("start", self)
    raise MyError("custom failure 42")


@app.task(name="integ.rejecter", bind=True, acks_late=True)
def rejecter(self: Any) -> None:
    ledger("start", self)
    raise Reject("bad input 7", requeue=False)


@app.task(name="integ.soft_limited", bind=True, soft_time_limit=0.5)
def soft_limited(self: Any) -> str:
    from tqcore.exceptions import SoftTimeLimitExceeded

    ledger("start", self)
    try:
        time.sleep(5)
    except SoftTimeLimitExceeded:
        ledger("end", self)
        return "cleaned up"
    return "not interrupted"


@app.task(name="integ.hard_limited", bind=True, time_limit=0.5)
def hard_limited(self: Any) -> str:
    ledger("start", self)
    time.sleep(5)
    ledger("end", self)
    return "not killed"


@app.task(name="integ.dies", bind=True)
def dies(self: Any) -> None:
    ledger("start", self)
    os._exit(7)


@app.task(name="integ.child_pid", bind=True)
def child_pid(self: Any) -> int:
    ledger("start", self)
    ledger("end", self)
    return os.getpid()
