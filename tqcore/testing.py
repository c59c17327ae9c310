"""Helpers for testing code that uses tqcore: an in-process worker.

Example::

    with start_worker(app, pool="threads", concurrency=2):
        assert add.delay(2, 2).get(timeout=10) == 4
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from tqcore.worker import Worker

if TYPE_CHECKING:
    from tqcore.app import App


@contextlib.contextmanager
def start_worker(app: App, pool: str = "threads", concurrency: int = 1,
                 queues: list[str] | None = None, hostname: str | None = None,
                 ready_timeout: float = 30.0, shutdown_timeout: float = 30.0,
                 **kwargs: Any) -> Iterator[Worker]:
    """Run a worker for ``app`` in a background thread for the duration of the block.

    Args:
        app: the app under test.
        pool: ``threads`` or ``solo``.
        concurrency: pool slots.
        queues: queues to consume (default: the app's default queue).
        hostname: node name (default ``testworker-<n>@%h``).
        ready_timeout: seconds to wait for the worker to start consuming.
        shutdown_timeout: seconds to wait for a warm shutdown at the end.
        **kwargs: more :class:`~tqcore.worker.Worker` options (``lease``, ...).

    Raises:
        RuntimeError: the worker did not become ready in time.
    """
    worker = Worker(app, hostname=hostname or f"testworker-{id(app):x}@%h", queues=queues,
                    concurrency=concurrency, pool=pool, **kwargs)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=run, name="tqcore-test-worker", daemon=True)
    thread.start()
    if not worker.wait_ready(ready_timeout):
        worker.stop(cold=True)
        raise RuntimeError(f"worker did not start within {ready_timeout}s: {errors!r}")
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(shutdown_timeout)
        if thread.is_alive():
            worker.stop(cold=True)
            thread.join(5)
    if errors:
        raise errors[0]
