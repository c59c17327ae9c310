"""Broker faults on Redis and RabbitMQ, CI tier (reliability.md §4.2 R5-R12 and the
broker being down at worker start).

Each row of :mod:`bench.reliability.broker_faults` / :mod:`~bench.reliability.broker_poison`
runs once (private servers on free loopback ports, real prefork workers, a ledger
written by the tasks) and several tests assert its invariants. Invariants tqcore does
not meet yet are ``xfail`` tests naming the cause, so the row's table line still says
FAIL while the suite stays usable; a fix turns a strict one into XPASS, which fails
until the marker is removed.

Without ``redis-server``/``rabbitmq-server`` the rows are skipped, unless ``CI=true``,
where they fail. R8 (iptables partition) is skipped when iptables is missing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.reliability import report, suite  # noqa: E402
from bench.reliability.report import Result  # noqa: E402

SEED = int(os.environ.get("REL_SEED", "1"))
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

_RESULTS: dict[str, Result] = {}


@pytest.fixture()
def row(record_row: Callable[[Result], None],
        tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Result]:
    """Run a row of the CI tier once per session; later tests reuse its result. Its
    directory (logs, ledger, broker data) is under pytest's temp root, which pytest
    prunes: rows with known gaps fail their own checks on every run."""
    def get(sid: str) -> Result:
        if sid not in _RESULTS:
            res = suite.run(sid, "ci", SEED, base=tmp_path_factory.mktemp(sid))
            _RESULTS[sid] = res
            record_row(res)
            print(f"\n{report.HEADER}\n{report.RULE}\n{res.row()}")
        res = _RESULTS[sid]
        if res.skipped:
            if CI and "not installed" in res.skipped and sid != "R8":
                pytest.fail(f"{sid}: {res.skipped} (required when CI=true)")
            pytest.skip(f"{sid}: {res.skipped}")
        assert not res.error, f"{sid} aborted: {res.error}\n{res.row()}"
        return res
    return get


def check(res: Result, *names: str) -> None:
    """Assert named invariants of ``res`` (each failure says which one)."""
    for name in names:
        found = [c for c in res.checks if c.name == name]
        assert found, f"{res.id}: check {name!r} was not reached\n{res.figures}"
        assert found[0].ok, f"{res.id}: {name}: {found[0].detail}\n{res.row()}"


def known_gap(reason: str, strict: bool = True) -> Any:
    return pytest.mark.xfail(reason=f"tqcore gap: {reason}", strict=strict)


# -- broker down at worker start ------------------------------------------------------------
@pytest.mark.parametrize("sid", ["BD-redis", "BD-rabbitmq"])
def test_broker_down_at_start_gives_a_clear_error(row: Callable[[str], Result],
                                                   sid: str) -> None:
    res = row(sid)
    check(res, "clear one-line error naming the broker", "lost == 0")


@pytest.mark.parametrize("sid", ["BD-redis", "BD-rabbitmq"])
def test_broker_down_at_start_worker_retries_until_up(row: Callable[[str], Result],
                                                       sid: str) -> None:
    res = row(sid)
    check(res, "worker keeps retrying until the broker answers",
          "worker consumes once the broker is up")


# -- R5 / R6 / R7: broker kill -9 and restart -------------------------------------------------
def test_r5_redis_restart_without_persistence_fails_fast_and_resumes(
        row: Callable[[str], Result]) -> None:
    res = row("R5")
    check(res, "workers alive (no crash)", "publishes fail fast (<= socket timeout) during"
          " the outage", "workers resume <= 5 s", "published after the restart: lost == 0",
          "phantom == 0")
    # The backlog held by the empty restarted server is lost, silently: reported as a gap.
    if res.lost:
        assert "gap" in res.figures and res.figures["tq_alarm"] == 0


def test_r6_redis_restart_with_aof_loses_nothing(row: Callable[[str], Result]) -> None:
    res = row("R6")
    check(res, "lost == 0", "phantom == 0", "dup <= Σ in-flight", "workers resume <= 5 s",
          "workers alive (no crash)", "broker drained")
    assert res.faults == 3
    assert res.figures["pub_failed"] > 0, "no publish met a restart: the kills hit nothing"


def test_r7_rabbitmq_restart_quorum_loses_nothing(row: Callable[[str], Result]) -> None:
    res = row("R7")
    check(res, "lost == 0", "phantom == 0", "dup <= Σ in-flight", "workers resume <= 10 s",
          "workers alive (no crash)", "broker drained")
    assert res.figures["already_closed_lines"] == 0
    assert res.ok, res.failures()


def test_r8_silent_partition(row: Callable[[str], Result]) -> None:
    res = row("R8")  # skipped where iptables/netns are unavailable
    assert res.ok, res.failures()


# -- R9: connection-reset storm -----------------------------------------------------------------
@pytest.mark.parametrize("sid", ["R9-redis", "R9-rabbitmq"])
def test_r9_reset_storm_no_stuck_consumer(row: Callable[[str], Result], sid: str) -> None:
    res = row(sid)
    check(res, "resets hit connections", "lost == 0", "phantom == 0", "dup <= Σ in-flight",
          "workers alive (no crash)", "backlog done <= 10 s after the storm",
          "no stuck consumer: every worker ran post-storm tasks",
          "control mailbox answers (ping) from every worker", "broker drained")


@pytest.mark.parametrize("sid", [
    pytest.param("R6", marks=known_gap(
        "a retried publish skips ids still queued (tq:meta) or settled in the last 30 s"
        " (tq:acked), but a Redis restart loses what its AOF had not yet synced (up to a"
        " second with appendfsync everysec), those records included: a message that ran"
        " just before the restart can be enqueued again by the retry", strict=False)),
    "R9-redis"])
def test_redis_retried_publish_is_not_applied_twice(row: Callable[[str], Result],
                                                     sid: str) -> None:
    res = row(sid)
    check(res, "no publish applied twice (retry after a lost reply)")


@pytest.mark.parametrize("sid", ["R7", "R9-rabbitmq"])
def test_rabbitmq_publish_is_not_applied_twice(row: Callable[[str], Result],
                                               sid: str) -> None:
    res = row(sid)
    check(res, "no publish applied twice (retry after a lost reply)")


@pytest.mark.parametrize("sid", ["R9-redis", "R9-rabbitmq"])
def test_r9_reset_storm_throughput_recovers(row: Callable[[str], Result], sid: str) -> None:
    res = row(sid)
    check(res, "post-storm throughput >= min_ratio of baseline")


# -- R10: frozen broker ------------------------------------------------------------------------
def test_r10_frozen_redis_no_crash_no_loss(row: Callable[[str], Result]) -> None:
    res = row("R10")
    check(res, "workers alive (no crash)", "lost == 0", "phantom == 0",
          "dup == 0 (freeze < lease: leases held)", "resumes <= 5 s after SIGCONT",
          "broker drained")


def test_r10_no_claim_orphaned_for_a_lease(row: Callable[[str], Result]) -> None:
    res = row("R10")
    check(res, "no task waits out a lease after SIGCONT")


# -- R11: maxmemory ----------------------------------------------------------------------------
def test_r11_redis_maxmemory_typed_error_and_recovery(row: Callable[[str], Result]) -> None:
    res = row("R11")
    check(res, "producer gets a typed error, not a hang",
          "the error says the broker is out of memory", "no half-written message",
          "publishes work again once memory returns", "lost == 0",
          "refused publishes never ran", "workers alive (no crash)", "broker drained")
    assert res.ok, res.failures()


# -- R12: poison messages ----------------------------------------------------------------------
@pytest.mark.parametrize("sid", ["R12-redis", "R12-rabbitmq"])
def test_r12_poison_dead_lettered_good_tasks_complete(row: Callable[[str], Result],
                                                      sid: str) -> None:
    res = row(sid)
    check(res, "each bad message dead-lettered with a reason",
          "each dead-lettered once, on its first delivery (no loop)", "quarantined <= 1 s",
          "canary from the pickle payload absent", "unknown task recorded FAILURE",
          "good tasks: lost == 0", "good tasks: dup == 0", "workers alive (no crash)",
          "broker drained")


@pytest.mark.parametrize("sid", ["R12-redis", "R12-rabbitmq"])
def test_r12_poison_good_throughput_holds(row: Callable[[str], Result], sid: str) -> None:
    res = row(sid)
    check(res, "good-task throughput >= min_ratio of baseline")


@pytest.mark.parametrize("sid", ["R12-redis", "R12-rabbitmq"])
def test_r12_poison_worker_rss_bounded(row: Callable[[str], Result], sid: str) -> None:
    res = row(sid)
    check(res, "worker RSS < 2x baseline")
