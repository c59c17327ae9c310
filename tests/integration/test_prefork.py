"""The prefork pool: time limits, a dying child, recycling, and terminate's aim."""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import Harness, wait_until
from tests.integration.proj import (
    child_pid,
    dies,
    hard_limited,
    noop,
    sleepy_early,
    soft_limited,
)
from tqcore.exceptions import TimeLimitExceeded, WorkerLostError


def test_soft_limit_is_catchable_and_hard_limit_kills_the_child(tq: Harness) -> None:
    tq.start_worker(pool="prefork", concurrency=2)
    assert soft_limited.delay().get(timeout=20) == "cleaned up"
    res = hard_limited.delay()
    with pytest.raises(TimeLimitExceeded):
        res.get(timeout=20)
    assert tq.ledger.starts(res.id) and not tq.ledger.ends(res.id)
    # the pool replaced the killed child and still serves
    assert noop.delay("after").get(timeout=20) == "after"


def test_a_child_that_dies_fails_its_task_and_the_pool_goes_on(tq: Harness) -> None:
    tq.start_worker(pool="prefork", concurrency=2)
    res = dies.delay()
    with pytest.raises(WorkerLostError):
        res.get(timeout=20)
    assert len(tq.ledger.starts(res.id)) == 1  # early ack: not redelivered
    assert [noop.delay(i).get(timeout=20) for i in range(5)] == list(range(5))


def test_max_tasks_per_child_recycles_children_without_losing_work(tq: Harness) -> None:
    w2 = tq.start_worker(pool="prefork", concurrency=1, extra=["--max-tasks-per-child", "2"])
    results = [child_pid.delay() for _ in range(10)]
    pids = [r.get(timeout=30) for r in results]
    assert len(pids) == 10
    assert len(set(pids)) >= 5, f"children were not recycled every 2 tasks: {pids}"
    assert w2.alive()


def test_terminate_stops_exactly_the_targeted_task(tq: Harness) -> None:
    tq.start_worker(pool="prefork", concurrency=2)
    target = sleepy_early.delay(8.0)
    other = sleepy_early.delay(2.0)
    wait_until(lambda: tq.ledger.starts(target.id) and tq.ledger.starts(other.id), 20,
               "both long tasks to start")
    replies = tq.app.control.revoke(target.id, terminate=True, signal="SIGKILL", reply=True,
                                    timeout=3)
    assert any("terminated" in str(v) for r in replies for v in r.values()), replies
    wait_until(lambda: target.state == "REVOKED", 10, "the target to be REVOKED")
    assert other.get(timeout=20) == "slept"
    time.sleep(0.5)
    assert not tq.ledger.ends(target.id)
    assert len(tq.ledger.ends(other.id)) == 1
