"""``worker_deduplicate_successful_tasks`` (Celery's setting, off by default): a
redelivered ``acks_late`` message whose task already succeeded is acked, not run again.

The redelivery is made for real: this process claims the messages under another
consumer name with a short lease and never settles them, as a worker that died would;
the worker then claims them again, with their delivery attempt counted.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import Harness, use_broker, wait_until
from tests.integration.proj import short_early, short_late
from tqcore import states


@pytest.fixture(params=["sqlite", "redis"])
def h(request: pytest.FixtureRequest, tq: Harness, monkeypatch: pytest.MonkeyPatch
      ) -> Iterator[Harness]:
    """The integration harness on SQLite, or with Redis as broker and backend."""
    if request.param == "redis":
        use_broker(tq, request.getfixturevalue("redis_url"), monkeypatch)
    yield tq


def _lose_claims(h: Harness, count: int) -> None:
    """Claim ``count`` messages as a consumer that dies: they come back after 0.5 s."""
    got = h.app.transport.claim(["celery"], consumer="ghost", limit=count, lease=0.5,
                                timeout=5)
    assert len(got) == count


@pytest.mark.parametrize("dedupe", [True, False])
def test_a_redelivered_task_that_already_succeeded_is_not_run_again(
        h: Harness, dedupe: bool) -> None:
    done = short_late.delay(1)  # succeeded (its result says so), then redelivered
    failed = short_late.delay(2)  # its stored state is FAILURE: runs again
    early = short_early.delay(3)  # acks early: never deduplicated
    fresh_id = short_late.delay(4).id  # first delivery, SUCCESS stored: runs
    _lose_claims(h, 3)
    for task_id, state in ((done.id, states.SUCCESS), (failed.id, states.FAILURE),
                           (early.id, states.SUCCESS), (fresh_id, states.SUCCESS)):
        h.app.backend.store_result(task_id, "before", state)

    h.env["INTEG_DEDUPE"] = "1" if dedupe else "0"
    h.start_worker(pool="prefork", concurrency=1)
    runs = {failed.id, early.id, fresh_id} | ({done.id} if not dedupe else set())
    wait_until(lambda: runs <= set(h.ledger.end_counts()), 30, "the tasks that must run")
    wait_until(lambda: (h.stats().depth, h.stats().in_flight) == (0, 0), 10,
               "every message settled")
    ran = h.ledger.start_counts()
    assert ran[failed.id] == ran[early.id] == ran[fresh_id] == 1
    assert ran[done.id] == (0 if dedupe else 1)
    # A duplicate is acked, not dead-lettered; its stored result is left as it was.
    assert h.app.transport.dead_letters("celery") == []
    if dedupe:
        assert done.get(timeout=5) == "before"
