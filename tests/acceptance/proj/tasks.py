"""The acceptance suite's example project: the tasks of Celery's canvas guide, and more.

A worker runs this module exactly as a user would run theirs::

    TQ_BROKER_URL=sqlite:////tmp/x/tq.db TQ_RESULT_BACKEND=sqlite:////tmp/x/tq.db \\
        python3 -m tqcore -A tests.acceptance.proj.tasks worker -P threads -c 4 -l info

``App("proj")`` is given no URLs: the app reads ``TQ_BROKER_URL`` / ``TQ_RESULT_BACKEND``
(the worker process), or the test process sets ``app.conf.broker_url`` /
``app.conf.result_backend`` before first use (see ``conftest.py``).

Tasks that must leave evidence the test can read even when they have no stored result
(error callbacks run inline in the worker; tasks that must *not* run) write JSON
records under the directory named by ``TQ_TEST_DIR``; see :func:`record`.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from tqcore import App

app = App("proj")


# -- evidence the test process can read ------------------------------------------------


def records_dir() -> Path:
    """The directory shared by the test process and the worker (env ``TQ_TEST_DIR``)."""
    return Path(os.environ["TQ_TEST_DIR"])


def record(kind: str, data: dict[str, Any]) -> None:
    """Write one JSON record under ``$TQ_TEST_DIR/<kind>/`` atomically (write, then rename)."""
    folder = records_dir() / kind
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns()}-{uuid.uuid4().hex}.json"
    tmp = folder / f".{name}.tmp"
    tmp.write_text(json.dumps(data, default=repr))
    tmp.rename(folder / name)


def read_records(kind: str) -> list[dict[str, Any]]:
    """Every record of ``kind`` written so far, oldest first."""
    folder = records_dir() / kind
    if not folder.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


# -- the canvas guide's tasks ------------------------------------------------------------


@app.task(name="proj.add")
def add(x: Any, y: Any) -> Any:
    return x + y


@app.task(name="proj.mul")
def mul(x: Any, y: Any) -> Any:
    return x * y


@app.task(name="proj.xsum")
def xsum(numbers: list[Any]) -> Any:
    return sum(numbers)


@app.task(name="proj.tsum")
def tsum(numbers: list[Any]) -> Any:
    return sum(numbers)


@app.task(name="proj.raising_task")
def raising_task(*args: Any, **kwargs: Any) -> None:
    raise ValueError("something something")


@app.task(name="proj.echo")
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Return exactly what it was called with (shows argument order and merging)."""
    return {"args": list(args), "kwargs": kwargs}


@app.task(name="proj.log_error")
def log_error(request: Any, exc: BaseException, traceback: Any) -> None:
    """A new-style error callback (Celery >= 4): called inline with the failed request.

    Records what it received under ``errors``.
    """
    kwargs = getattr(request, "kwargs", None)
    record("errors", {
        "request_id": getattr(request, "id", None),
        "task": getattr(request, "task", None),
        "kwargs": kwargs if isinstance(kwargs, dict) else None,
        "exc_type": type(exc).__name__,
        "exc": str(exc),
        "traceback_type": type(traceback).__name__,
        "traceback": traceback if isinstance(traceback, str) else None,
    })


@app.task(name="proj.log_error_id")
def log_error_id(task_id: str) -> str:
    """An old-style error callback: sent as a task with the failed task's id as argument."""
    record("errors_by_id", {"task_id": task_id})
    return task_id


@app.task(name="proj.mark")
def mark(*args: Any, token: str, **kwargs: Any) -> str:
    """Record that it ran (so a test can prove a task never ran)."""
    record("marks", {"token": token, "args": list(args), "kwargs": kwargs})
    return token


@app.task(name="proj.record_value")
def record_value(value: Any, tag: str) -> Any:
    """A callback that records the value it was applied with under ``values``."""
    record("values", {"tag": tag, "value": value})
    return value


# -- retries ---------------------------------------------------------------------------


@app.task(bind=True, name="proj.flaky", max_retries=3)
def flaky(self: Any, value: Any, token: str, failures: int = 1, countdown: float = 0.5) -> Any:
    """Fails (by retrying itself) ``failures`` times, then returns ``value``."""
    record("attempts", {"token": token, "retries": self.request.retries, "at": time.time()})
    if self.request.retries < failures:
        raise self.retry(countdown=countdown)
    return value


@app.task(bind=True, name="proj.always_retry", max_retries=2)
def always_retry(self: Any, token: str) -> None:
    """Retries until ``max_retries`` is exhausted: ends in MaxRetriesExceededError."""
    record("attempts", {"token": token, "retries": self.request.retries, "at": time.time()})
    raise self.retry(countdown=0.2)


@app.task(bind=True, name="proj.autoretry", autoretry_for=(KeyError,), max_retries=2,
          default_retry_delay=0.2)
def autoretry(self: Any, token: str) -> None:
    """Raises KeyError every time; ``autoretry_for`` retries it twice, then it fails."""
    record("attempts", {"token": token, "retries": self.request.retries, "at": time.time()})
    raise KeyError(f"attempt {self.request.retries}")


@app.task(bind=True, name="proj.backoff", autoretry_for=(ConnectionError,),
          retry_backoff=True, retry_jitter=False, max_retries=3)
def backoff(self: Any, token: str, succeed_at: int = 2) -> int:
    """Raises ConnectionError until retry number ``succeed_at``; backoff is 1 s, 2 s, 4 s."""
    record("attempts", {"token": token, "retries": self.request.retries, "at": time.time()})
    if self.request.retries < succeed_at:
        raise ConnectionError("flaky network")
    return self.request.retries


# -- the workflow: A -> group(B1, B2) -> C -> D ------------------------------------------


def _wf_record(task: Any, step: str, args: list[Any], token: str) -> None:
    req = task.request
    record("wf", {"token": token, "step": step, "args": args, "id": req.id,
                  "retries": req.retries, "parent_id": req.parent_id, "root_id": req.root_id})


@app.task(bind=True, name="proj.wf_a")
def wf_a(self: Any, x: int, token: str) -> int:
    _wf_record(self, "A", [x], token)
    return x + 1


@app.task(bind=True, name="proj.wf_b1")
def wf_b1(self: Any, a: int, token: str) -> int:
    _wf_record(self, "B1", [a], token)
    return a * 2


@app.task(bind=True, name="proj.wf_b2", max_retries=2)
def wf_b2(self: Any, a: int, token: str, fail_always: bool = False) -> int:
    """Retries itself once (``countdown=0.5``) then succeeds; with ``fail_always``, never does."""
    _wf_record(self, "B2", [a], token)
    if fail_always or self.request.retries < 1:
        raise self.retry(countdown=0.5)
    return a * 3


@app.task(bind=True, name="proj.wf_c")
def wf_c(self: Any, values: list[int], token: str) -> dict[str, Any]:
    _wf_record(self, "C", [values], token)
    return {"inputs": values, "total": sum(values)}


@app.task(bind=True, name="proj.wf_d")
def wf_d(self: Any, c_result: dict[str, Any], token: str) -> int:
    _wf_record(self, "D", [c_result], token)
    return int(c_result["total"]) * 10
