"""pytest fixtures for apps using tqcore (loaded automatically once tqcore is installed).

Fixtures (Celery's plugin names with a ``tq_`` prefix):

* ``tq_config``: settings for the test app (override it in your conftest);
* ``tq_worker_parameters``: keyword arguments for the worker (pool, concurrency, ...);
* ``tq_app``: a fresh :class:`~tqcore.App` on a SQLite file in ``tmp_path``;
* ``tq_worker``: a worker for ``tq_app`` running in a thread during the test.

Register your tasks on ``tq_app`` in the test, or point ``tq_config`` at your own
app's settings; ``tq_worker`` serves whatever ``tq_app`` has registered.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tqcore.app import App
from tqcore.testing import start_worker
from tqcore.worker import Worker


@pytest.fixture()
def tq_config() -> dict[str, Any]:
    """Settings for ``tq_app``; override to change them."""
    return {}


@pytest.fixture()
def tq_worker_parameters() -> dict[str, Any]:
    """Keyword arguments for :func:`tqcore.testing.start_worker`."""
    return {"pool": "threads", "concurrency": 2}


@pytest.fixture()
def tq_app(tmp_path: Path, tq_config: dict[str, Any]) -> Iterator[App]:
    """An app on a private SQLite file (broker and results)."""
    url = f"sqlite:///{tmp_path / 'tq.db'}"
    conf = {"broker_url": url, "result_backend": url, **tq_config}
    app = App("tq_test", **conf)
    yield app
    app.close()


@pytest.fixture()
def tq_worker(tq_app: App, tq_worker_parameters: dict[str, Any]) -> Iterator[Worker]:
    """A worker serving ``tq_app`` in a background thread."""
    with start_worker(tq_app, **tq_worker_parameters) as worker:
        yield worker
