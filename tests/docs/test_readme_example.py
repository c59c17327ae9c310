"""The README's pytest-plugin example (docs/beat_locks_testing.md, "Testing your tasks"),
copied verbatim: it must pass as written."""

from tqcore import chain


def test_chain_of_tasks(tq_app, tq_worker):
    @tq_app.task
    def add(x, y):
        return x + y

    @tq_app.task
    def mul(x, y):
        return x * y

    result = chain(add.s(2, 2), mul.s(8), add.s(1)).delay()  # (2 + 2) * 8 + 1

    assert result.get(timeout=10) == 33
    assert result.parent.get(timeout=10) == 32
