"""``tqcore inspect`` / ``control`` / ``retry`` against two live prefork workers.

Every command runs as a subprocess with only ``TQ_BROKER_URL`` to find the broker;
what ran is read from the tasks' ledger, never from tqcore's own counters.
"""

from __future__ import annotations

import time
from collections import Counter

from tests.remote import remote_app
from tests.remote.conftest import Cluster, node, wait_until

W1, W2, W3 = node("w1"), node("w2"), node("w3")


def test_inspect_ping_lists_both_workers(cluster: Cluster) -> None:
    rc, out = cluster.cli_json("inspect", "ping", "--json", "-t", "10")
    assert rc == 0
    assert set(out) == {"replies", "no_reply"}
    assert out["replies"] == {W1: {"ok": "pong"}, W2: {"ok": "pong"}}
    assert out["no_reply"] == []


def test_inspect_ping_reports_a_dead_registered_worker_as_no_reply(cluster: Cluster) -> None:
    """A worker SIGKILLed right after it registered stays in the registry (~6 s): ping
    lists it under no_reply and exits 1; once its entry expires, ping exits 0 again."""
    w3 = cluster.start_worker("w3", pool="threads", concurrency=1)
    w3.kill9()
    killed = time.monotonic()
    assert W3 in cluster.registered(), "w3's registry entry vanished at once"
    rc, out = cluster.cli_json("inspect", "ping", "--json", "-t", "2", expect_rc=None)
    elapsed = time.monotonic() - killed
    assert elapsed < 5.5, f"ping took until {elapsed:.1f}s after the kill: inconclusive"
    assert rc == 1, out
    assert out["no_reply"] == [W3]
    assert out["replies"] == {W1: {"ok": "pong"}, W2: {"ok": "pong"}}

    # The entry expires (3 heartbeats, ~6 s after the last refresh) and all is well again.
    wait_until(lambda: W3 not in cluster.registered(), 20.0, "w3's registry entry to expire",
               interval=0.2)
    assert time.monotonic() - killed < 12.0
    rc, out = cluster.cli_json("inspect", "ping", "--json", "-t", "10")
    assert out["no_reply"] == [] and set(out["replies"]) == {W1, W2}


def test_control_rate_limit_caps_throughput_per_worker(cluster: Cluster) -> None:
    rc, out = cluster.cli_json("control", "rate_limit", "remote.limited", "2/s", "--json",
                               "-t", "10")
    assert out["replies"] == {W1: {"ok": "new rate limit set successfully"},
                              W2: {"ok": "new rate limit set successfully"}}
    assert out["no_reply"] == []
    try:
        ids = [remote_app.limited.delay(i).id for i in range(30)]
        cluster.wait_states(ids, {"SUCCESS"}, timeout=120.0)
    finally:
        cluster.cli("control", "rate_limit", "remote.limited", "0", "-t", "10")

    starts = [e for e in cluster.ledger.starts() if e["id"] in set(ids)]
    assert Counter(e["id"] for e in starts) == Counter(ids), "each task runs exactly once"
    times = sorted(e["t"] for e in starts)
    first = times[0]
    per_window = Counter(int(t - first) for t in times)
    assert max(per_window.values()) <= 5, f"starts per 1 s window: {sorted(per_window.items())}"
    hosts = {e["host"] for e in starts}
    assert hosts == {W1, W2}, f"both workers take part: {hosts}"
    for host in hosts:
        mine = sorted(e["t"] for e in starts if e["host"] == host)
        windows = Counter(int(t - first) for t in mine)
        assert max(windows.values()) <= 3, f"{host}: starts per 1 s window {sorted(windows.items())}"
        # 2/s with a bucket of 1: n starts on one worker span at least ~(n - 1) / 2 s.
        assert mine[-1] - mine[0] >= 0.8 * (len(mine) - 1) / 2, f"{host}: {len(mine)} starts" \
            f" in {mine[-1] - mine[0]:.2f}s"
    # 2/s per worker, 2 workers, bucket of 1: 30 starts take at least ~(30 - 2) / 4 s.
    assert times[-1] - first >= 5.0, f"30 starts in {times[-1] - first:.2f}s"


def test_control_revoke_of_a_queued_countdown_task(cluster: Cluster) -> None:
    countdown = 6.0
    sent = time.monotonic()
    r = cluster.cli("call", "remote.add", "-a", "[20, 22]", "--countdown", str(countdown))
    assert r.returncode == 0, r.stderr
    task_id = r.stdout.strip()
    assert cluster.state(task_id) == "PENDING"
    rc, out = cluster.cli_json("control", "revoke", task_id, "--json", "-t", "10")
    assert time.monotonic() - sent < countdown, "revoke came after the countdown: inconclusive"
    assert set(out["replies"]) == {W1, W2}
    assert all("ok" in v for v in out["replies"].values()), out
    cluster.wait_states([task_id], {"REVOKED", "SUCCESS", "FAILURE"}, timeout=60.0)
    assert cluster.state(task_id) == "REVOKED"
    time.sleep(0.5)
    assert cluster.ledger.starts(task_id) == [], "a revoked task ran"


def test_retry_reruns_a_failed_task_with_the_same_args(cluster: Cluster) -> None:
    task_id = remote_app.flaky.delay(7, "x-tag").id
    cluster.wait_states([task_id], {"FAILURE", "SUCCESS"})
    assert cluster.state(task_id) == "FAILURE"
    # The worker keeps the failed message right after storing FAILURE: allow it a moment.
    time.sleep(0.5)

    # --dry-run lists it and sends nothing.
    rc, out = cluster.cli_json("retry", "--exc", "ValueError", "--dry-run", "--json")
    assert out["dry_run"] is True
    assert out["sent"] == []
    selected = {s["task_id"]: s for s in out["selected"]}
    assert task_id in selected, out
    assert selected[task_id]["name"] == "remote.flaky"
    assert selected[task_id]["exc_type"] == "ValueError"
    time.sleep(2.0)
    assert cluster.state(task_id) == "FAILURE"
    assert len(cluster.ledger.starts(task_id)) == 1, "a dry run re-ran the task"

    # A real retry runs it again: same id, same args, SUCCESS on its second run.
    r = cluster.cli("retry", task_id)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    assert f"retried {task_id} remote.flaky" in r.stdout
    cluster.wait_states([task_id], {"SUCCESS"}, timeout=60.0)
    assert remote_app.app.AsyncResult(task_id).get(timeout=10) == [7, "x-tag"]
    runs = cluster.ledger.starts(task_id)
    assert len(runs) == 2, runs
    assert runs[0]["args"] == runs[1]["args"] == [7, "x-tag"]
    assert runs[0]["name"] == runs[1]["name"] == "remote.flaky"
