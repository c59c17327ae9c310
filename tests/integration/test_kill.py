"""Worker crash (SIGKILL of the worker process): reliability rows R1 and R1b.

* ``acks_late``: a message is acknowledged only after the task body returned, so a
  worker killed mid-task leaves the message leased in the broker; after the lease
  it is delivered again (at-least-once, no loss).
* early ack (the default): the message is acknowledged right before the body runs,
  so a task killed mid-run is lost, but never duplicated (at-most-once).

Executions are counted from the tasks' own ledger, not from tqcore.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.integration.conftest import Harness, wait_until
from tests.integration.proj import short_early, short_late, sleepy_early, sleepy_late

LEASE = 2.0


def test_acks_late_task_killed_mid_run_runs_again_exactly_once(tq: Harness) -> None:
    w1 = tq.start_worker(concurrency=1, prefetch=1, lease=LEASE)
    res = sleepy_late.delay(3.0)
    wait_until(lambda: tq.ledger.starts(res.id), 30, "the task to start on worker 1")
    time.sleep(0.5)  # well inside the 3 s body
    w1.kill9()
    assert len(tq.ledger.starts(res.id)) == 1
    assert tq.ledger.ends(res.id) == [], "the body finished before the kill: test is void"
    # The message is still inside the broker, leased to the dead worker.
    assert tq.stats().in_flight == 1

    # Two new workers: the 3 s re-run outlasts the 2 s lease, so if the running
    # worker did not renew its lease the idle one would run the task a third time.
    w2 = tq.start_worker(concurrency=1, prefetch=1, lease=LEASE, wait=False)
    w3 = tq.start_worker(concurrency=1, prefetch=1, lease=LEASE, wait=False)
    tq.wait_registered(w2)
    tq.wait_registered(w3)
    assert res.get(timeout=60) == "slept"
    assert res.state == "SUCCESS"
    # Give a (buggy) third delivery time to show up: more than a lease.
    time.sleep(LEASE + 1.0)
    starts = tq.ledger.starts(res.id)
    ends = tq.ledger.ends(res.id)
    assert len(starts) == 2, f"expected 2 executions (killed + redelivered), got {starts}"
    assert len(ends) == 1, f"expected exactly 1 completed execution, got {ends}"
    assert starts[0].pid == w1.pid and starts[1].pid != w1.pid
    assert starts[1].attempt == 2, "the redelivery must carry attempt 2"
    # Not redelivered before the dead worker's lease (claimed just before the start) ran out.
    assert starts[1].t >= starts[0].t + LEASE - 0.5
    s = tq.stats()
    assert (s.depth, s.in_flight, s.dead_lettered) == (0, 0, 0)


def test_early_ack_task_killed_mid_run_is_not_redelivered(tq: Harness) -> None:
    w1 = tq.start_worker(concurrency=1, prefetch=1, lease=LEASE)
    res = sleepy_early.delay(3.0)
    wait_until(lambda: tq.ledger.starts(res.id), 30, "the task to start on worker 1")
    time.sleep(0.5)
    w1.kill9()
    killed = time.monotonic()
    assert tq.ledger.ends(res.id) == [], "the body finished before the kill: test is void"

    tq.start_worker(concurrency=1, prefetch=1, lease=LEASE)
    # Wait well past the lease, and prove the new worker is consuming meanwhile.
    probe = sleepy_early.delay(0.0)
    assert probe.get(timeout=60) == "slept"
    remaining = killed + 3 * LEASE - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
    probe2 = sleepy_early.delay(0.0)
    assert probe2.get(timeout=60) == "slept"

    assert len(tq.ledger.starts(res.id)) == 1, "an early-acked task must not run twice"
    assert tq.ledger.ends(res.id) == []
    assert res.state != "SUCCESS"
    s = tq.stats()
    assert (s.depth, s.in_flight) == (0, 0), f"the acked message is still in the broker: {s}"


def _run_with_kills(tq: Harness, results: list[Any], concurrency: int, prefetch: int,
                    until: Callable[[], bool]) -> list[int]:
    """Serve ``results`` with a worker that is SIGKILLed after 1/4 and 1/2 of them
    completed and restarted each time; returns the killed workers' pids."""
    n = len(results)
    killed = []
    worker = tq.start_worker(concurrency=concurrency, prefetch=prefetch, lease=LEASE)
    for threshold in (n // 4, n // 2):
        wait_until(lambda t=threshold: len(tq.ledger.end_counts()) >= t, 90,
                   f"{threshold} tasks to complete before a kill")
        worker.kill9()
        killed.append(worker.pid)
        worker = tq.start_worker(concurrency=concurrency, prefetch=prefetch, lease=LEASE)
    wait_until(until, 120, "the remaining tasks to be handled")
    return killed


def test_acks_late_bulk_with_two_kills_loses_nothing(tq: Harness) -> None:
    n = 300
    concurrency, prefetch = 2, 2
    prefetch_limit = concurrency * prefetch
    with tq.app.producer_batch():
        results = [short_late.delay(i, 0.01) for i in range(n)]
    sent = {r.id for r in results}
    assert len(sent) == n

    kills = len(_run_with_kills(tq, results, concurrency, prefetch,
                                lambda: sent <= set(tq.ledger.end_counts())))
    # Results: every task SUCCESS with its own value.
    values = {r.id: r.get(timeout=30) for r in results}
    assert sorted(values.values()) == list(range(n))

    time.sleep(LEASE + 1.0)  # a lingering redelivery would show up now
    ends = tq.ledger.end_counts()
    starts = tq.ledger.start_counts()
    lost = [tid for tid in sent if ends[tid] == 0]
    phantom = [tid for tid in set(starts) if tid not in sent]
    duplicates = sum(c - 1 for c in ends.values() if c > 1)
    extra_starts = sum(c - 1 for c in starts.values() if c > 1)
    print(f"\nkills={kills} lost={len(lost)} duplicates={duplicates} "
          f"extra_starts={extra_starts} prefetch_limit={prefetch_limit}")
    assert lost == []
    assert phantom == []
    assert duplicates <= 2 * prefetch_limit * kills
    assert extra_starts <= 2 * prefetch_limit * kills
    s = tq.stats()
    assert (s.depth, s.in_flight, s.scheduled, s.dead_lettered) == (0, 0, 0, 0)


def test_early_ack_bulk_with_two_kills_never_duplicates(tq: Harness) -> None:
    n = 300
    concurrency, prefetch = 2, 2
    prefetch_limit = concurrency * prefetch
    with tq.app.producer_batch():
        results = [short_early.delay(i, 0.01) for i in range(n)]
    sent = {r.id for r in results}

    def settled() -> bool:
        s = tq.stats()
        return len(tq.ledger.end_counts()) >= n - 2 * prefetch_limit and \
            (s.depth, s.in_flight, s.scheduled) == (0, 0, 0)

    killed = _run_with_kills(tq, results, concurrency, prefetch, settled)
    time.sleep(LEASE + 1.0)  # a lingering redelivery would show up now
    starts = tq.ledger.start_counts()
    ends = tq.ledger.end_counts()
    duplicates = sum(c - 1 for c in starts.values() if c > 1)
    lost = [tid for tid in sent if ends[tid] == 0]
    print(f"\nkills={len(killed)} lost={len(lost)} duplicates={duplicates}")
    assert duplicates == 0, "an early-acked task ran twice"
    assert not set(starts) - sent
    assert len(lost) <= len(killed) * prefetch_limit
    # Every loss is attributable to a kill: it started on a worker that was killed (or
    # was acked by a slot in the instant before its body began: at most one per slot).
    by_id = {e.task_id: e for e in tq.ledger.starts()}
    for tid in lost:
        if tid in by_id:
            assert by_id[tid].pid in killed, f"task {tid} died on a worker nobody killed"
    never_started = [tid for tid in lost if tid not in by_id]
    assert len(never_started) <= len(killed) * concurrency, (
        f"{len(never_started)} tasks vanished without ever starting")
    # A body that ended just before its worker was killed has no result (early ack: it
    # is not run again): at most one per slot per kill, each on a killed worker.
    unstored = []
    for i, r in enumerate(results):
        if r.id in lost:
            continue
        if r.ready():
            assert r.get(timeout=5) == i
        else:
            unstored.append(r.id)
            assert by_id[r.id].pid in killed, f"task {r.id} has no result, its worker lives"
    assert len(unstored) <= len(killed) * concurrency
