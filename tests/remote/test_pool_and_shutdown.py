"""``control pool_grow`` and ``control shutdown`` (allowed, and refused with
``--without-control shutdown``) against live prefork workers."""

from __future__ import annotations

import time
from collections.abc import Callable

import psutil
import pytest

from tests.remote.conftest import Cluster, node, wait_until

W1, W2 = node("w1"), node("w2")


@pytest.fixture(scope="module")
def guarded(cluster_factory: Callable[[], Cluster]) -> Cluster:
    """w1 (plain) and w2 started with ``--without-control shutdown``."""
    c = cluster_factory()
    c.start_worker("w1", wait=False)
    c.start_worker("w2", "--without-control", "shutdown", wait=False)
    for w in c.workers.values():
        c.wait_registered(w)
    return c


def _pool_children(pid: int) -> int:
    return len(psutil.Process(pid).children(recursive=False))


def test_pool_grow_shows_in_stats(guarded: Cluster) -> None:
    w1 = guarded.workers["w1"]
    wait_until(lambda: _pool_children(w1.pid) == 2, 30.0, "w1's 2 pool children")
    rc, out = guarded.cli_json("control", "pool_grow", "1", "-d", W1, "--json", "-t", "10")
    assert list(out["replies"]) == [W1], "only the destination replies"
    assert "ok" in out["replies"][W1], out
    assert out["no_reply"] == []

    rc, out = guarded.cli_json("inspect", "stats", "--json", "-t", "10")
    assert set(out["replies"]) == {W1, W2}
    assert out["replies"][W1]["pool"]["max-concurrency"] == 3
    assert out["replies"][W2]["pool"]["max-concurrency"] == 2
    # ... and the pool really has a third child process.
    wait_until(lambda: _pool_children(w1.pid) == 3, 30.0, "w1's third pool child")


def test_shutdown_refused_by_without_control(guarded: Cluster) -> None:
    w2 = guarded.workers["w2"]
    rc, out = guarded.cli_json("control", "shutdown", "-d", W2, "--json", "-t", "10",
                               expect_rc=1)
    assert list(out["replies"]) == [W2]
    assert "error" in out["replies"][W2], out
    assert "shutdown" in out["replies"][W2]["error"]
    assert out["no_reply"] == []
    time.sleep(2.0)
    assert w2.alive(), "w2 stopped although shutdown is disabled on it"
    rc, out = guarded.cli_json("inspect", "ping", "-d", W2, "--json", "-t", "10")
    assert out["replies"] == {W2: {"ok": "pong"}}


def test_shutdown_stops_the_destination_only(guarded: Cluster) -> None:
    w1, w2 = guarded.workers["w1"], guarded.workers["w2"]
    rc, out = guarded.cli_json("control", "shutdown", "-d", W1, "--json", "-t", "10")
    assert out["replies"] == {W1: {"ok": "shutting down"}}
    assert w1.proc.wait(timeout=60) == 0, w1.log_tail()
    wait_until(lambda: W1 not in guarded.registered(), 10.0, "w1 to leave the registry")
    assert w2.alive()
    rc, out = guarded.cli_json("inspect", "ping", "--json", "-t", "10")
    assert out == {"replies": {W2: {"ok": "pong"}}, "no_reply": []}
