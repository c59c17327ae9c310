"""The reliability fault suite, CI tier (reliability.md §4.2), on the SQLite broker.

Each test runs one scenario of :mod:`bench.reliability` with real prefork worker
processes, a chaos driver with a seeded RNG and a ledger written by the tasks
themselves, then asserts the scenario's invariants. The Markdown row of every
scenario is collected into a table printed at the end of the session; on failure the scenario's
directory (logs, ledger, broker file) is kept and named in the message.

Seed: ``REL_SEED`` (default 1). The whole file takes a few minutes on 2 cores.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # a bare `pytest` does not put the cwd on sys.path
    sys.path.insert(0, str(REPO))

from bench.reliability import report, suite  # noqa: E402
from bench.reliability.report import Result  # noqa: E402

SEED = int(os.environ.get("REL_SEED", "1"))
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture()
def run(record_row: Callable[[Result], None]) -> Callable[[str], Result]:
    """Run a scenario of the CI tier; its row goes into the session's table."""
    def go(sid: str) -> Result:
        res = suite.run(sid, "ci", SEED)
        record_row(res)
        print(f"\n{report.HEADER}\n{report.RULE}\n{res.row()}")
        return res
    return go


def check(res: Result, name: str) -> Any:
    """Assert one named invariant of ``res`` (so each failure says which one)."""
    found = [c for c in res.checks if c.name == name]
    assert found, f"{res.id}: check {name!r} was not reached: {res.error}\n{res.figures}"
    assert found[0].ok, f"{res.id}: {name}: {found[0].detail}\n{res.row()}"


def assert_all(res: Result) -> None:
    assert not res.error, f"{res.id} aborted: {res.error}\n{res.row()}"
    assert res.ok, f"{res.id} failed:\n{res.failures()}\n{res.row()}"


def test_r1_worker_killed_acks_late_loses_nothing(run: Callable[[str], Result]) -> None:
    res = run("R1")
    check(res, "lost == 0")
    check(res, "dup <= Σ in-flight")
    assert res.faults >= 3
    assert res.recovery, "no task was re-run after a kill: the kills hit nothing"
    assert_all(res)


def test_r1b_worker_killed_early_ack_never_duplicates(run: Callable[[str], Result]) -> None:
    res = run("R1b")
    check(res, "dup == 0 (early ack)")
    check(res, "lost <= Σ in-flight")
    check(res, "each loss on a killed worker")
    assert_all(res)


def test_r2_pool_children_killed_pool_refills(run: Callable[[str], Result]) -> None:
    res = run("R2")
    check(res, "lost == 0")
    check(res, "parents survive")
    check(res, "pool refills <= 2 s")
    assert res.figures["interrupted"] >= 1, "no kill interrupted a running task"
    assert_all(res)


def test_r3_poison_task_dead_lettered_after_max_deliveries(run: Callable[[str], Result]) -> None:
    res = run("R3")
    check(res, "attempts == max_deliveries")
    check(res, "in the dead-letter queue once")
    check(res, "result FAILURE(WorkerLostError)")
    check(res, "others: lost == 0")
    assert_all(res)


def test_r4_sigterm_requeues_prefetched_at_once(run: Callable[[str], Result]) -> None:
    res = run("R4")
    check(res, "requeue latency << lease")
    check(res, "warm: running tasks finished there")
    check(res, "soft timeout: running handed back")
    check(res, "lost == 0")
    check(res, "dup == 0")
    assert_all(res)


def test_r13_countdown_longer_than_lease_runs_once_never_early(run: Callable[[str], Result]) -> None:
    res = run("R13")
    check(res, "none early")
    check(res, "each ran exactly once")
    assert_all(res)


def test_r16_sqlite_contention_with_kills(run: Callable[[str], Result]) -> None:
    res = run("R16")
    check(res, "lost == 0")
    check(res, "no 'database is locked'")
    check(res, "WAL < 64 MB")
    assert_all(res)


def test_r17_chord_body_fires_exactly_once(run: Callable[[str], Result]) -> None:
    res = run("R17")
    check(res, "each body fired exactly once (re-runs only as redeliveries)")
    check(res, "every body run got the full ordered results")
    check(res, "lost == 0")
    assert_all(res)


def test_r18_revoke_terminate_hits_only_its_target(run: Callable[[str], Result]) -> None:
    res = run("R18")
    check(res, "targets stop <= 2 s")
    check(res, "collateral kills == 0")
    check(res, "offline revoke honoured, never ran")
    assert_all(res)


def test_r20_no_prefetch_starvation_behind_a_long_task(run: Callable[[str], Result]) -> None:
    res = run("R20")
    check(res, "p99 wait < 1 s")
    assert_all(res)


def test_r23_child_recycling_soak(run: Callable[[str], Result]) -> None:
    res = run("R23")
    check(res, "lost == 0 (every task ran)")
    check(res, "children recycled")
    assert_all(res)
