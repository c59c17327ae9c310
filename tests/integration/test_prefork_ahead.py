"""The prefork pool's job sent ahead to a busy child: it never waits long behind a long
task while another child is free, a revoke or terminate never hits it by mistake, and
a child that dies or a worker that stops hands it back unstarted.

Each test enqueues its tasks before the worker starts, so the worker's first claim
takes them together: with ``-c 2`` the first two go to the idle children and the next
ones are sent ahead to the busy children (the pool's order is deterministic).
Run on SQLite and RabbitMQ (the parent settles messages) and on Redis (the children do).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.integration.conftest import Harness, use_broker, wait_until
from tests.integration.proj import short_early, sleepy_early


@pytest.fixture(params=["sqlite", "redis", "amqp"])
def h(request: pytest.FixtureRequest, tq: Harness, monkeypatch: pytest.MonkeyPatch
      ) -> Iterator[Harness]:
    """The integration harness on SQLite, with Redis as broker and backend, or with
    RabbitMQ as broker (results in the SQLite file)."""
    if request.param == "redis":
        use_broker(tq, request.getfixturevalue("redis_url"), monkeypatch)
    elif request.param == "amqp":
        use_broker(tq, request.getfixturevalue("amqp_url"), monkeypatch, backend=tq.url)
    assert tq.app.transport.settles_from_any_process is (request.param == "redis")
    yield tq


def _ran_once(h: Harness, *ids: str) -> None:
    starts, ends = h.ledger.start_counts(), h.ledger.end_counts()
    assert all(starts[i] == 1 and ends[i] == 1 for i in ids), (starts, ends)


def test_a_job_waiting_behind_a_long_task_moves_to_a_child_that_frees_up(h: Harness) -> None:
    long = sleepy_early.delay(4.0)
    shorts = [short_early.delay(i, 0.05) for i in range(6)]
    h.start_worker(pool="prefork", concurrency=2)
    assert [s.get(timeout=15) for s in shorts] == list(range(6))
    (long_start,) = h.ledger.starts(long.id)
    last_short = max(e.t for s in shorts for e in h.ledger.ends(s.id))
    # One short task was sent ahead to the long task's child; it ran on the other.
    assert last_short < long_start.t + 2.5, "a short task waited for the 4 s task"
    assert {e.pid for s in shorts for e in h.ledger.starts(s.id)} == {
        e.pid for e in h.ledger.starts(shorts[0].id)}
    assert long.get(timeout=15) == "slept"
    _ran_once(h, long.id, *(s.id for s in shorts))


def test_terminating_a_task_spares_the_job_sent_ahead_to_its_child(h: Harness) -> None:
    target = sleepy_early.delay(8.0)
    other = sleepy_early.delay(3.0)
    ahead = short_early.delay(7)
    h.start_worker(pool="prefork", concurrency=2)
    wait_until(lambda: h.ledger.starts(target.id) and h.ledger.starts(other.id), 20,
               "both long tasks to start")
    time.sleep(0.3)
    assert not h.ledger.starts(ahead.id)  # no child is free: it waits ahead
    replies = h.app.control.revoke(target.id, terminate=True, signal="SIGKILL", reply=True,
                                   timeout=3)
    assert any("terminated" in str(v) for r in replies for v in r.values()), replies
    wait_until(lambda: target.state == "REVOKED", 10, "the target to be REVOKED")
    # The child was killed with the job sent ahead unread: it runs on the new child.
    assert ahead.get(timeout=10) == 7
    assert other.get(timeout=15) == "slept"
    assert not h.ledger.ends(target.id)
    _ran_once(h, ahead.id, other.id)


def test_revoking_a_job_sent_ahead_takes_it_back_before_it_runs(h: Harness) -> None:
    # The job is sent ahead to the first child, whose task ends first: that child
    # would read and run it at once.
    first, second = sleepy_early.delay(1.5), sleepy_early.delay(4.0)
    ahead = short_early.delay(1)
    h.start_worker(pool="prefork", concurrency=2)
    wait_until(lambda: h.ledger.starts(first.id) and h.ledger.starts(second.id), 20,
               "both long tasks to start")
    time.sleep(0.2)
    h.app.control.revoke(ahead.id, reply=True, timeout=3)
    assert first.get(timeout=15) == second.get(timeout=15) == "slept"
    wait_until(lambda: ahead.state == "REVOKED", 10, "the job sent ahead to be REVOKED")
    assert not h.ledger.starts(ahead.id)


def test_a_warm_shutdown_hands_back_or_runs_the_jobs_sent_ahead(h: Harness) -> None:
    """Unacked jobs sent ahead go back to the queue; early-acked ones (where the parent
    acks: acked when sent ahead, so they never run twice) are run before the worker
    exits. Either way none is lost."""
    first, second = sleepy_early.delay(1.5), sleepy_early.delay(1.5)
    ahead = [short_early.delay(i) for i in range(2)]
    w = h.start_worker(pool="prefork", concurrency=2)
    wait_until(lambda: h.ledger.starts(first.id) and h.ledger.starts(second.id), 20,
               "both long tasks to start")
    time.sleep(0.2)
    assert w.stop() == 0
    assert first.get(timeout=5) == second.get(timeout=5) == "slept"
    if h.app.transport.settles_from_any_process:  # the children ack as they start
        assert not any(h.ledger.starts(a.id) for a in ahead)
        assert h.stats().depth == 2  # back in the queue, not lost and not run
        h.start_worker(pool="prefork", concurrency=2)
    else:
        assert h.stats().depth == 0
    assert [a.get(timeout=15) for a in ahead] == [0, 1]
    _ran_once(h, first.id, second.id, *(a.id for a in ahead))


def test_autoscale_grows_for_jobs_sent_ahead_and_they_move_to_the_new_children(
        h: Harness) -> None:
    longs = [sleepy_early.delay(2.0) for _ in range(4)]
    h.start_worker(pool="prefork", concurrency=1, extra=["--autoscale", "4,1"])
    # One child to start with: the second job waits ahead, the others queue; the pool
    # grows for all of them and they all run at once.
    wait_until(lambda: all(h.ledger.starts(r.id) for r in longs), 8, "all four to start")
    starts = [h.ledger.starts(r.id)[0] for r in longs]
    assert max(s.t for s in starts) - min(s.t for s in starts) < 1.5
    assert len({s.pid for s in starts}) == 4
    assert [r.get(timeout=15) for r in longs] == ["slept"] * 4
    _ran_once(h, *(r.id for r in longs))
