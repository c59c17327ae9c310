"""``tqcore events``: task lifecycles, ``State`` folded from the stream vs the result
backend, worker heartbeats, and hostile strings in ``--dump`` output."""

from __future__ import annotations

import dataclasses
import json
import re
import statistics
import time
from collections import Counter, defaultdict
from typing import Any

import pytest

from tests.remote import remote_app
from tests.remote.conftest import Cluster, node
from tqcore import chain, chord, codec, group
from tqcore.events import State

W1, W2 = node("w1"), node("w2")
# One task id's events, in stream order: a run is received, started, then it ends; a
# retry's message is sent by the running body (before its task-retried) and runs again.
LIFECYCLE = re.compile(r"sent received started( sent retried received started)*"
                       r" (succeeded|failed)")


def _replay_window(cluster: Cluster) -> str:
    """Seconds of history covering everything since the cluster started (and a margin)."""
    return str(int(time.time() - cluster.started_at) + 15)


def _workload(cluster: Cluster) -> dict[str, str]:
    """~100 tasks: successes, failures, retries, a chain, a group and a chord.

    Returns ``{task_id: expected final state}``.
    """
    expected: dict[str, str] = {}
    for i in range(60):
        expected[remote_app.add.delay(i, i).id] = "SUCCESS"
    for i in range(10):
        expected[remote_app.boom.delay(i).id] = "FAILURE"
    for i in range(10):
        expected[remote_app.retry_once.delay(i).id] = "SUCCESS"
    res = chain(remote_app.add.s(1, 2), remote_app.add.s(3), remote_app.add.s(4)).apply_async()
    for r in (res, res.parent, res.parent.parent):
        expected[r.id] = "SUCCESS"
    gres = group(remote_app.add.s(i, 1) for i in range(10)).apply_async()
    for r in gres.results:
        expected[r.id] = "SUCCESS"
    cres = chord([remote_app.add.s(i, i) for i in range(5)])(remote_app.tsum.s())
    expected[cres.id] = "SUCCESS"
    for r in cres.parent.results:
        expected[r.id] = "SUCCESS"

    cluster.wait_states(list(expected), {"SUCCESS", "FAILURE", "REVOKED"}, timeout=150.0)
    assert res.get(timeout=10) == 10
    assert gres.get(timeout=10) == [i + 1 for i in range(10)]
    assert cres.get(timeout=10) == 20
    assert len(expected) == 99
    return expected


@dataclasses.dataclass
class Run:
    expected: dict[str, str]  # task id -> expected final state
    events: list[dict[str, Any]]  # what `tqcore events --json` printed, in order

    def of(self, task_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("uuid") == task_id
                and str(e.get("type", "")).startswith("task-")]


@pytest.fixture(scope="module")
def workload(cluster: Cluster) -> Run:
    """The workload, run to completion, and the event stream read back with the CLI."""
    expected = _workload(cluster)
    time.sleep(0.5)  # task events are flushed by each worker every 0.1 s
    events = cluster.events("--replay", _replay_window(cluster), "--duration", "3")
    return Run(expected, events)


def test_state_folded_from_the_stream_agrees_with_the_backend(cluster: Cluster,
                                                              workload: Run) -> None:
    st = State()
    for ev in workload.events:
        st.event(ev)
    assert st.malformed == 0
    disagree = {}
    for task_id, want in workload.expected.items():
        backend = cluster.state(task_id)
        folded = st.tasks[task_id].state if task_id in st.tasks else None
        if not (backend == folded == want):
            disagree[task_id] = {"backend": backend, "state": folded, "expected": want,
                                 "events": [e["type"] for e in workload.of(task_id)]}
    assert not disagree, json.dumps(disagree, indent=1)[:4000]
    assert {W1, W2} <= set(st.workers)
    retried = [t for t in workload.expected
               if any(e["type"] == "task-retried" for e in workload.of(t))]
    assert len(retried) == 10, "each retry_once task is retried once"


def test_every_task_lifecycle_is_in_order_in_the_stream(workload: Run) -> None:
    """Per task id, in the order `tqcore events` prints them: the lifecycle, timestamps
    that never go back, and each sender's clock increasing."""
    problems: list[str] = []
    for task_id, want in workload.expected.items():
        evs = workload.of(task_id)
        desc = [(e["type"], e["hostname"], e["clock"], round(e["timestamp"], 4)) for e in evs]
        name = next((e.get("name") for e in evs if e.get("name")), "?")
        types = " ".join(e["type"].removeprefix("task-") for e in evs)
        if not LIFECYCLE.fullmatch(types):
            problems.append(f"{name} {task_id}: out of order: {desc}")
        elif (want == "FAILURE") != types.endswith("failed"):
            problems.append(f"{name} {task_id}: wrong end: {desc}")
        stamps = [e["timestamp"] for e in evs]
        if stamps != sorted(stamps):
            problems.append(f"{name} {task_id}: timestamps go back: {desc}")
        clocks: dict[str, list[int]] = defaultdict(list)
        for e in evs:
            clocks[e["hostname"]].append(e["clock"])
        for host, cs in clocks.items():
            if any(b <= a for a, b in zip(cs, cs[1:])):
                problems.append(f"{name} {task_id}: clock of {host} does not increase: {desc}")
    by_name = Counter(p.split(" ", 1)[0] for p in problems)
    assert not problems, (f"{len(problems)} problem(s), by task name {dict(by_name)}:\n"
                          + "\n".join(problems[:12]))


def test_task_event_clock_increases_per_sender(cluster: Cluster) -> None:
    """Across all tasks, each sender's task events reach the broker in clock order.

    Arrival order, as a subscriber receives them: ``tqcore events`` prints them by
    timestamp, and a prefork worker stamps a ``task-started`` it learns of late (the
    job was sent ahead to a busy child) with the time the child started it."""
    ids = [remote_app.add.delay(i, 0).id for i in range(40)]
    cluster.wait_states(ids, {"SUCCESS"})
    time.sleep(0.5)
    sub = remote_app.app.transport.subscribe_events(replay=float(_replay_window(cluster)))
    events: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            for raw in sub.get(0.2):
                body = codec.loads(raw)
                events += body if isinstance(body, list) else [body]
    finally:
        sub.close()
    assert {ev.get("uuid") for ev in events} >= set(ids)
    by_sender: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for ev in events:
        if ev["type"].startswith("task-"):
            by_sender[ev["hostname"]].append((ev["clock"], ev["type"]))
    bad = {}
    for host, seq in by_sender.items():
        drops = [(a, b) for a, b in zip(seq, seq[1:]) if b[0] <= a[0]]
        if drops:
            bad[host] = drops[:5]
    assert not bad, f"task event clocks going back in stream order: {bad}"


def test_worker_heartbeats(cluster: Cluster) -> None:
    wait = cluster.started_at + 11.0 - time.time()
    if wait > 0:
        time.sleep(wait)
    events = cluster.events("--replay", _replay_window(cluster), "--duration", "1")
    for host in (W1, W2):
        beats = [e for e in events if e["type"] == "worker-heartbeat" and e["hostname"] == host]
        assert len(beats) >= 4, f"{host}: {len(beats)} heartbeats in {_replay_window(cluster)}s"
        seqs = [b["seq"] for b in beats]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"{host}: seq {seqs}"
        gaps = [b["timestamp"] - a["timestamp"] for a, b in zip(beats, beats[1:])]
        assert all(1.5 <= g <= 6.0 for g in gaps), f"{host}: gaps {gaps}"
        assert 1.8 <= statistics.median(gaps) <= 3.0, f"{host}: gaps {gaps}"
        for b in beats:
            assert b["pool_size"] == 2
            assert isinstance(b["pool_busy"], int) and 0 <= b["pool_busy"] <= 2
            assert b["queues"] == ["celery"]
            assert isinstance(b["cpu"], int | float) and b["cpu"] >= 0
            assert isinstance(b["rss"], int) and b["rss"] > 0
            assert isinstance(b["loadavg"], list) and len(b["loadavg"]) == 3
            assert b["sw_ident"] == "py-tqcore"
            assert b["freq"] == 2.0


HOSTILE = "\x1b[2J\x1b]0;pwned\x07\u202e\x9b31m"


def test_hostile_strings_are_inert_in_dump(cluster: Cluster) -> None:
    app = remote_app.app
    echoed = remote_app.echo.delay(f"arg{HOSTILE}").id
    unknown = app.send_task(f"remote.evil{HOSTILE}", args=[HOSTILE], kwargs={"k": HOSTILE}).id
    # A hostile producer can also write the fields the dump prints without repr().
    raw = {"hostname": f"evil{HOSTILE}@host", "utcoffset": 0, "pid": 1, "clock": 1,
           "timestamp": time.time(), "type": f"task-x{HOSTILE}", "uuid": f"u{HOSTILE}"}
    app.transport.publish_event("task.multi", codec.dumps([raw]).encode())
    cluster.wait_states([echoed], {"SUCCESS"})
    cluster.wait_states([unknown], {"FAILURE"})
    time.sleep(0.5)

    r = cluster.cli("events", "--dump", "--replay", _replay_window(cluster), "--duration", "2",
                    text=False)
    assert r.returncode == 0, r.stderr
    out: bytes = r.stdout
    assert b"\x1b" not in out
    assert b"\x9b" not in out
    text = out.decode("utf-8")
    assert "\u202e" not in text
    assert "\x07" not in text
    for tid in (echoed, unknown):
        lines = [ln for ln in text.splitlines() if tid in ln]
        assert lines, f"{tid} not in the dump"
        # args/kwargs/result are repr strings printed with repr() again: their escapes come
        # out doubled (\\x1b); either way they must be there, visible.
        flat = [re.sub(r"\\+", lambda m: "\\", ln) for ln in lines]
        assert any("\\x1b[2J" in ln and "\\x1b]0;pwned\\x07" in ln and "\\u202e" in ln
                   and "\\x9b" in ln for ln in flat), lines
    raw_lines = [ln for ln in text.splitlines() if "evil\\x1b[2J" in ln and "@host" in ln]
    assert raw_lines, "the raw hostile event is missing from the dump"
    assert "\\x9b" in raw_lines[0] and "\\u202e" in raw_lines[0]

    # --json is inert too (JSON escapes every control character).
    r = cluster.cli("events", "--json", "--replay", _replay_window(cluster), "--duration", "1",
                    text=False)
    assert b"\x1b" not in r.stdout and b"\x9b" not in r.stdout
