"""The README's eager-mode example (a ``tq_config`` override), copied verbatim."""

import pytest


@pytest.fixture
def tq_config():
    return {"task_always_eager": True, "task_eager_propagates": True}


def test_add_runs_inline(tq_app):
    @tq_app.task
    def add(x, y):
        return x + y

    assert add.delay(2, 3).get() == 5
