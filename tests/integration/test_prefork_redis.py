"""The prefork pool on Redis, where the children settle their own messages (an early
ack right before the body, a late ack, requeue or dead letter after it) instead of the
parent's manager thread: every way a task can end still settles its message once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import Harness, use_broker, wait_until
from tests.integration.proj import dies, rejecter, short_early, short_late
from tqcore.exceptions import WorkerLostError


@pytest.fixture
def tqr(tq: Harness, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    """The integration harness with Redis as broker and result backend."""
    assert tq.app.transport.settles_from_any_process is False  # SQLite: the parent does
    use_broker(tq, redis_url, monkeypatch)
    assert tq.app.transport.settles_from_any_process is True
    yield tq


def _settled(h: Harness) -> bool:
    s = h.stats()
    return s.depth == 0 and s.in_flight == 0


def test_children_settle_early_and_late_acks_once(tqr: Harness) -> None:
    tqr.start_worker(pool="prefork", concurrency=2, lease=30)
    early = [short_early.delay(i, 0) for i in range(40)]
    late = [short_late.delay(i, 0) for i in range(40)]
    assert [r.get(timeout=30) for r in early + late] == list(range(40)) * 2
    wait_until(lambda: _settled(tqr), 10, "every message settled")
    assert set(tqr.ledger.start_counts().values()) == {1}


def test_a_child_dying_after_its_early_ack_fails_the_task_without_a_rerun(
        tqr: Harness) -> None:
    tqr.start_worker(pool="prefork", concurrency=2, lease=2)
    res = dies.delay()
    with pytest.raises(WorkerLostError):
        res.get(timeout=20)
    assert short_early.delay(1, 0).get(timeout=20) == 1
    wait_until(lambda: _settled(tqr), 10, "every message settled")
    assert len(tqr.ledger.starts(res.id)) == 1  # acked by the child: never redelivered


def test_a_rejecting_task_is_dead_lettered_by_its_child(tqr: Harness) -> None:
    tqr.start_worker(pool="prefork", concurrency=2, lease=30)
    res = rejecter.delay()
    wait_until(lambda: tqr.app.transport.dead_letters("celery"), 20, "the dead letter")
    [letter] = tqr.app.transport.dead_letters("celery")
    assert letter.message_id == res.id and "bad input 7" in letter.reason
    wait_until(lambda: _settled(tqr), 10, "every message settled")
