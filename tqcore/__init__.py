"""tqcore: a distributed task queue with Celery's API and wire protocol.

Public API::

    from tqcore import App, signature, chain, group, chord, chunks, AsyncResult, GroupResult, states

``import tqcore`` loads neither redis, pika, textual nor rich: brokers import their
driver only when a URL needs it.
"""

from __future__ import annotations

from tqcore import states
from tqcore.app import App, current_app
from tqcore.canvas import (
    Signature,
    chain,
    chord,
    chunks,
    group,
    maybe_signature,
    signature,
    xmap,
    xstarmap,
)
from tqcore.result import AsyncResult, EagerResult, GroupResult, ResultSet
from tqcore.task import Task

__version__ = "0.1.0"

#: Celery's class name, so ``from tqcore import Celery`` works for movers.
Celery = App

__all__ = [
    "App", "AsyncResult", "Celery", "EagerResult", "GroupResult", "ResultSet", "Signature",
    "Task", "chain", "chord", "chunks", "current_app", "group", "maybe_signature", "signature",
    "states", "xmap", "xstarmap", "__version__",
]
