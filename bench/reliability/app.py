"""The tqcore app of the fault suite: tasks that write the ledger themselves.

Worker processes run it as a user would::

    TQ_BROKER_URL=sqlite:////tmp/r/tq.db TQ_RESULT_BACKEND=sqlite:////tmp/r/tq.db \\
    REL_LEDGER_DIR=/tmp/r/ledger python3 -m tqcore -A bench.reliability.app worker ...

``REL_MAX_DELIVERIES`` sets ``broker_max_deliveries`` (claims before dead-letter).
The driver process imports this module too, as a producer only (it points
``app.conf`` at the scenario's file itself).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from bench.reliability import ledger
from tqcore import App

app = App("reliability")
app.conf.broker_max_deliveries = int(os.environ.get("REL_MAX_DELIVERIES", "5"))

_LATE = {"acks_late": True, "reject_on_worker_lost": True}


def _dir() -> str:
    return os.environ["REL_LEDGER_DIR"]


def _start(task: Any) -> float:
    t = time.time()
    req = task.request
    ledger.append(_dir(), "run", f"S {req.id} {req.attempts or 0} {os.getpid()} {t:.6f}\n")
    return t


def _end(task: Any, started: float, extra: str = "-") -> None:
    req = task.request
    ledger.append(_dir(), "run", f"E {req.id} {req.attempts or 0} {os.getpid()} {started:.6f}"
                                 f" {time.time():.6f} {extra}\n")


@app.task(name="rel.late", bind=True, **_LATE)
def late(self: Any, i: int, seconds: float = 0.0) -> int:
    """acks_late + reject_on_worker_lost: at-least-once."""
    t = _start(self)
    if seconds:
        time.sleep(seconds)
    _end(self, t)
    return i


@app.task(name="rel.early", bind=True, acks_late=False)
def early(self: Any, i: int, seconds: float = 0.0) -> int:
    """Early ack (the default): at-most-once."""
    t = _start(self)
    if seconds:
        time.sleep(seconds)
    _end(self, t)
    return i


@app.task(name="rel.poison", bind=True, **_LATE)
def poison(self: Any) -> None:
    """Kills its own process every time it runs (an OOM stand-in)."""
    _start(self)
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(name="rel.due", bind=True, **_LATE)
def due(self: Any, i: int, not_before: float) -> int:
    """An ETA task: ``extra`` is how late it started (negative = early)."""
    t = _start(self)
    _end(self, t, f"{t - not_before:.6f}")
    return i


@app.task(name="rel.part", bind=True, **_LATE)
def part(self: Any, i: int, jitter: float = 0.0) -> int:
    """A chord header member."""
    t = _start(self)
    if jitter:
        time.sleep(jitter)
    _end(self, t)
    return i


@app.task(name="rel.join", bind=True, **_LATE)
def join(self: Any, results: list[Any], chord_no: int, size: int) -> int:
    """A chord body: ``extra`` says whether it got the full ordered results."""
    t = _start(self)
    ok = list(results) == list(range(size))
    _end(self, t, f"chord{chord_no}:{'ok' if ok else 'bad'}")
    return len(results)
