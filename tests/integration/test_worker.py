"""Worker behaviour end to end: warm shutdown (R4), rate limits (R24), expiry, revokes,
priorities, routing, task states, retries, exceptions and rejects.

Tests that need a signal or ``-Q`` use a real worker process; the rest use the
in-process worker of :mod:`tqcore.testing`. Executions are counted from the ledger
the tasks write themselves.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.integration.conftest import Harness, wait_until
from tests.integration.proj import (
    always_retry,
    custom_fail,
    ignored,
    limited,
    noop,
    rejecter,
    retry_then_ok,
    sleepy_early,
    slow_first,
    t_a,
    t_b,
    tracked,
)
from tqcore.exceptions import RemoteError, TaskRevokedError
from tqcore.testing import start_worker

# -- warm shutdown (R4) ------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_warm_shutdown_finishes_running_task_and_hands_back_prefetched_at_once(
        tq: Harness, pool: str) -> None:
    # Queue everything first so one claim takes the long task and 3 short ones
    # (prefetch limit 1 x 4); the 5th short one stays in the queue.
    long = sleepy_early.delay(3.0)
    shorts = [noop.delay(f"short{i}") for i in range(4)]
    # A long lease: if prefetched messages were only freed by lease expiry, they
    # would still be in flight well after the worker exited.
    w1 = tq.start_worker(pool=pool, concurrency=1, prefetch=4, lease=30.0)
    wait_until(lambda: tq.ledger.starts(long.id), 30, "the long task to start")
    wait_until(lambda: (tq.stats().in_flight, tq.stats().depth) == (3, 1), 10,
               "3 prefetched messages held by the worker and 1 left in the queue")
    assert tq.ledger.starts() == tq.ledger.starts(long.id), "a short task ran on a busy slot"

    w1.signal(signal.SIGTERM)
    code = w1.wait(timeout=30)
    assert code == 0, f"warm shutdown exited with {code}"
    # The running task completed before the process exited.
    assert long.get(timeout=5) == "slept"
    assert len(tq.ledger.ends(long.id)) == 1
    # Prefetched-but-unstarted messages are ready again at once, not after the lease.
    wait_until(lambda: (tq.stats().depth, tq.stats().in_flight) == (4, 0), 2.0,
               "the 3 prefetched messages back in the queue (depth 4, in_flight 0)")
    assert all(not tq.ledger.starts(r.id) for r in shorts), "a prefetched task ran anyway"

    tq.start_worker(concurrency=2, lease=2.0)
    assert sorted(r.get(timeout=30) for r in shorts) == [f"short{i}" for i in range(4)]
    time.sleep(0.5)
    counts = tq.ledger.start_counts()
    assert {r.id: counts[r.id] for r in shorts} == {r.id: 1 for r in shorts}
    assert counts[long.id] == 1, "the long task ran again after the warm shutdown"
    s = tq.stats()
    assert (s.depth, s.in_flight, s.dead_lettered) == (0, 0, 0)


@pytest.mark.parametrize("how", ["sigterm-twice", "sigquit"])
def test_cold_shutdown_hands_running_acks_late_task_back_at_once(tq: Harness, how: str) -> None:
    res = slow_first.delay(8.0)
    w1 = tq.start_worker(concurrency=1, prefetch=1, lease=30.0)
    wait_until(lambda: tq.ledger.starts(res.id), 30, "the task to start")
    if how == "sigquit":
        w1.signal(signal.SIGQUIT)
    else:
        w1.signal(signal.SIGTERM)
        time.sleep(0.3)
        w1.signal(signal.SIGTERM)
    w1.wait(timeout=30)
    assert tq.ledger.ends(res.id) == [], "cold shutdown waited for the running task"
    # Handed back now (the 30 s lease has not run out): ready in the queue.
    wait_until(lambda: (tq.stats().depth, tq.stats().in_flight) == (1, 0), 2.0,
               "the running acks_late message back in the queue")
    tq.start_worker(concurrency=1, lease=2.0)
    assert res.get(timeout=30) == "done"
    starts = tq.ledger.starts(res.id)
    assert len(starts) == 2 and len(tq.ledger.ends(res.id)) == 1
    assert starts[1].pid != w1.pid


def test_solo_worker_keeps_leases_of_its_prefetched_messages(tq: Harness) -> None:
    # A live worker's claims are renewed (DESIGN 2.1): messages a busy solo worker has
    # prefetched must not expire to another worker and then run on both.
    long = sleepy_early.delay(4.0)
    shorts = [noop.delay(f"short{i}") for i in range(3)]
    tq.start_worker(pool="solo", concurrency=1, prefetch=4, lease=2.0)
    wait_until(lambda: tq.ledger.starts(long.id), 30, "the long task to start")
    wait_until(lambda: tq.stats().in_flight == 3, 10, "3 prefetched messages held by worker 1")
    tq.start_worker(pool="threads", concurrency=2, lease=2.0)
    assert long.get(timeout=30) == "slept"
    assert sorted(r.get(timeout=30) for r in shorts) == ["short0", "short1", "short2"]
    time.sleep(1.0)
    counts = tq.ledger.start_counts()
    assert {r.id: counts[r.id] for r in shorts} == {r.id: 1 for r in shorts}, (
        "prefetched messages of a live, busy solo worker ran twice")


# -- rate limit (R24, per worker) -----------------------------------------------------------


def test_rate_limit_spaces_task_starts(tq: Harness) -> None:
    n = 20
    with start_worker(tq.app, pool="threads", concurrency=4, lease=2.0):
        results = [limited.delay(i) for i in range(n)]
        assert sorted(r.get(timeout=60) for r in results) == list(range(n))
    starts = sorted(e.t for e in tq.ledger.starts())
    assert len(starts) == n
    span = starts[-1] - starts[0]
    # 5/s with a 1-token bucket: 19 gaps of 0.2 s = 3.8 s; lower bound only.
    assert span >= 3.0, f"20 tasks at 5/s started within {span:.2f}s"
    max_window = max(sum(1 for t in starts if t0 <= t < t0 + 1.0) for t0 in starts)
    assert max_window <= 6, f"{max_window} starts within one second (limit 5/s)"


# -- ETA longer than the lease (R13), prefetch starvation (R20) ------------------------------


def test_countdown_longer_than_lease_runs_once_and_not_early(tq: Harness) -> None:
    countdown, lease = 4.0, 2.0
    sent_at = time.time()
    results = [noop.apply_async((f"eta{i}",), countdown=countdown) for i in range(10)]
    w1 = tq.start_worker(concurrency=2, lease=lease, wait=False)
    w2 = tq.start_worker(concurrency=2, lease=lease, wait=False)
    tq.wait_registered(w1)
    tq.wait_registered(w2)
    assert sorted(r.get(timeout=60) for r in results) == sorted(f"eta{i}" for i in range(10))
    time.sleep(lease + 1.0)  # a second delivery after a lease would show up now
    counts = tq.ledger.start_counts()
    assert {r.id: counts[r.id] for r in results} == {r.id: 1 for r in results}
    first = min(e.t for e in tq.ledger.starts())
    early = sent_at + countdown - first
    assert early <= 0.05, f"an ETA task started {early:.2f}s early"


def test_short_tasks_are_not_starved_behind_a_long_one(tq: Harness) -> None:
    with start_worker(tq.app, pool="threads", concurrency=2, lease=2.0):
        long = sleepy_early.delay(4.0)
        wait_until(lambda: tq.ledger.starts(long.id), 30, "the long task to start")
        shorts = [noop.delay(i) for i in range(20)]
        assert sorted(r.get(timeout=30) for r in shorts) == list(range(20))
        assert tq.ledger.ends(long.id) == [], "short tasks only ran after the long one ended"
        assert long.get(timeout=30) == "slept"


# -- expiry and revokes ----------------------------------------------------------------------


def test_expired_while_queued_is_revoked_and_never_runs(tq: Harness) -> None:
    res = noop.apply_async(("expiring",), expires=1)
    time.sleep(2.0)  # no worker running: it expires in the queue
    with start_worker(tq.app, pool="threads", concurrency=2, lease=2.0):
        wait_until(lambda: res.state == "REVOKED", 30, "the expired task to be REVOKED")
        assert noop.delay("probe").get(timeout=30) == "probe"
    with pytest.raises(TaskRevokedError):
        res.get(timeout=5)
    assert tq.ledger.starts(res.id) == [], "an expired task ran"
    s = tq.stats()
    assert (s.depth, s.in_flight) == (0, 0)


def test_revoked_while_queued_never_runs(tq: Harness) -> None:
    res = noop.delay("revoked")
    res.revoke()
    with start_worker(tq.app, pool="threads", concurrency=2, lease=2.0):
        wait_until(lambda: res.state == "REVOKED", 30, "the revoked task to be REVOKED")
        assert noop.delay("probe").get(timeout=30) == "probe"
    assert tq.ledger.starts(res.id) == [], "a revoked task ran"
    s = tq.stats()
    assert (s.depth, s.in_flight) == (0, 0)


# -- priority and routing ------------------------------------------------------------------


def test_higher_priority_runs_first(tq: Harness) -> None:
    # Low priority sent first: FIFO alone would run them first.
    low = [noop.apply_async((f"low{i}",), priority=0) for i in range(5)]
    high = [noop.apply_async((f"high{i}",), priority=9) for i in range(5)]
    with start_worker(tq.app, pool="solo", concurrency=1, lease=2.0, prefetch_multiplier=1):
        for r in low + high:
            r.get(timeout=30)
    order = [e.task_id for e in tq.ledger.starts()]  # solo: one at a time, file order
    assert len(order) == 10
    high_ids = {r.id for r in high}
    assert set(order[:5]) == high_ids, (
        "priority 9 tasks must all run before priority 0 ones; ran: "
        + ", ".join("high" if t in high_ids else "low" for t in order))
    assert order[5:] == [r.id for r in low], "equal priorities must keep FIFO order"


def test_worker_with_queue_a_only_runs_queue_a(tq: Harness) -> None:
    on_a = [t_a.delay() for _ in range(3)] + [noop.apply_async(("explicit-a",), queue="a")]
    on_b = [t_b.delay() for _ in range(2)]
    on_default = noop.delay("default")
    tq.start_worker(concurrency=2, lease=2.0, queues="a")
    assert [r.get(timeout=30) for r in on_a] == ["a", "a", "a", "explicit-a"]
    assert all(r.queue == "a" for r in on_a)
    time.sleep(1.5)  # time for a wrong claim to show up
    assert all(not tq.ledger.starts(r.id) for r in on_b), "a queue-b task ran on a -Q a worker"
    assert not tq.ledger.starts(on_default.id), "a default-queue task ran on a -Q a worker"
    stats = {s.name: s for s in tq.app.transport.queue_stats()}
    assert stats["b"].depth == 2 and stats["b"].in_flight == 0
    assert stats["celery"].depth == 1
    assert stats["a"].depth == 0 and stats["a"].in_flight == 0
    assert stats["a"].consumers == 1 and stats["b"].consumers == 0
    assert all(r.state == "PENDING" for r in on_b)


# -- states ---------------------------------------------------------------------------------


def test_track_started_shows_started_while_running(tq: Harness) -> None:
    with start_worker(tq.app, pool="threads", concurrency=1, lease=2.0):
        res = tracked.delay(2.0)
        wait_until(lambda: res.state == "STARTED", 30, "state STARTED")
        assert tq.ledger.ends(res.id) == [], "STARTED was only seen after the task ended"
        assert len(tq.ledger.starts(res.id)) == 1
        info = res.info
        assert isinstance(info, dict) and info.get("pid") == tq.ledger.starts(res.id)[0].pid
        assert res.get(timeout=30) == "tracked"
    assert res.state == "SUCCESS"


def test_ignore_result_leaves_state_pending(tq: Harness) -> None:
    with start_worker(tq.app, pool="threads", concurrency=1, lease=2.0):
        res = ignored.delay()
        wait_until(lambda: tq.ledger.ends(res.id), 30, "the ignored-result task to run")
        # Let the worker settle the message; then nothing must have been stored.
        wait_until(lambda: (tq.stats().depth, tq.stats().in_flight) == (0, 0), 10,
                   "the message to be acknowledged")
        time.sleep(0.3)
    assert res.state == "PENDING"
    assert tq.app.backend.get_task_meta(res.id)["status"] == "PENDING"


# -- retries and exceptions ------------------------------------------------------------------


def test_retry_with_countdown_then_success(tq: Harness) -> None:
    with start_worker(tq.app, pool="threads", concurrency=2, lease=2.0):
        res = retry_then_ok.delay(2, 0.5)
        assert res.get(timeout=60) == 2
    assert res.state == "SUCCESS"
    assert res.retries == 2
    starts = tq.ledger.starts(res.id)
    assert [e.retries for e in starts] == [0, 1, 2]
    assert len(tq.ledger.ends(res.id)) == 1
    for before, after in zip(starts, starts[1:], strict=False):
        assert after.t - before.t >= 0.4, "a retry ran before its countdown"


def test_max_retries_exhausted_reraises_original_builtin_exception(tq: Harness) -> None:
    with start_worker(tq.app, pool="threads", concurrency=2, lease=2.0):
        res = always_retry.delay()
        with pytest.raises(ValueError, match="boom: gave up"):
            res.get(timeout=60)
    assert res.state == "FAILURE"
    assert isinstance(res.result, ValueError)
    assert [e.retries for e in tq.ledger.starts(res.id)] == [0, 1, 2]


def test_undeclared_custom_exception_comes_back_as_remote_error(tq: Harness) -> None:
    with start_worker(tq.app, pool="threads", concurrency=1, lease=2.0):
        res = custom_fail.delay()
        with pytest.raises(RemoteError) as info:
            res.get(timeout=30)
    err = info.value
    assert err.exc_type == "MyError"
    assert "custom failure 42" in err.exc_message
    assert "custom failure 42" in str(err) and "MyError" in str(err)
    assert res.state == "FAILURE"
    assert len(tq.ledger.starts(res.id)) == 1


def test_reject_without_requeue_dead_letters_with_reason(tq: Harness) -> None:
    with start_worker(tq.app, pool="threads", concurrency=1, lease=2.0):
        res = rejecter.delay()
        dead = wait_until(
            lambda: [d for d in tq.app.transport.dead_letters("celery") if d.message_id == res.id],
            30, "the rejected message in the dead-letter queue")
        time.sleep(1.0)  # a wrong requeue would run it again now
    assert len(dead) == 1
    assert "bad input 7" in dead[0].reason
    assert len(tq.ledger.starts(res.id)) == 1, "a rejected (requeue=False) task ran again"
    s = tq.stats()
    assert (s.depth, s.in_flight, s.dead_lettered) == (0, 0, 1)
