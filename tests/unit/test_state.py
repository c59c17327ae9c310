"""tqcore.events.State: the fold of Celery events into workers, tasks, queues, workflows,
failure signatures and aggregates."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tqcore import states
from tqcore.events import OFFLINE, ONLINE, UNKNOWN, State, normalise_message, signature_of, top_frame
from tqcore.events.signatures import parse_exception
from tqcore.events.tasks import R_NEW

T0 = 1_800_000_000.0
_clock_ids = itertools.count()


class Clock:
    """A settable clock."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ev(type_: str, uuid: str | None = None, ts: Any = T0, host: str = "w1@h",
       **fields: Any) -> dict[str, Any]:
    """An event with Celery's common fields."""
    event: dict[str, Any] = {"hostname": host, "utcoffset": 0, "pid": 100,
                             "clock": next(_clock_ids), "timestamp": ts, "type": type_}
    if uuid is not None:
        event["uuid"] = uuid
    event.update(fields)
    return event


def lifecycle(uuid: str, t: float = T0, name: str = "app.add", queue: str = "celery",
              host: str = "w1@h", outcome: str = "succeeded", **headers: Any
              ) -> list[dict[str, Any]]:
    """sent → received → started → <outcome> for one task."""
    hdr = {"name": name, "args": "(1, 2)", "kwargs": "{}", "retries": 0, "root_id": uuid,
           "parent_id": None, **headers}
    out = [ev("task-sent", uuid, t, host="gen1@producer", queue=queue, **hdr),
           ev("task-received", uuid, t + 0.1, host=host, **hdr),
           ev("task-started", uuid, t + 0.2, host=host)]
    if outcome == "succeeded":
        out.append(ev("task-succeeded", uuid, t + 1.2, host=host, result="3", runtime=1.0))
    elif outcome == "failed":
        out.append(ev("task-failed", uuid, t + 1.2, host=host, exception="ValueError('bad 1')",
                      traceback='  File "/app/tasks.py", line 9, in add\nValueError: bad 1\n',
                      runtime=1.0))
    return out


def check_invariants(state: State) -> None:
    """Indexes agree with the rows."""
    stored = Counter(t.state for t in state.tasks.values() if t.rank != R_NEW)
    assert {s: n for s, n in state.state_counts.items() if n} == dict(stored)
    assert sum(len(lru) for lru in state._lru) == len(state.tasks)
    for lru in state._lru:
        for uuid in lru:
            assert state.tasks[uuid].bucket == state._lru.index(lru)
    started = Counter(t.active_on.hostname for t in state.tasks.values() if t.active_on)
    for worker in state.workers.values():
        assert worker.tasks_active == started.get(worker.hostname, 0) >= 0
    for queue in state.queues.values():
        assert queue.waiting == sum(1 for t in state.tasks.values() if t.waiting_in is queue)


# -- per-event behaviour -----------------------------------------------------------------
def test_task_lifecycle_sets_state_timestamps_and_fields() -> None:
    state = State(clock=Clock())
    state.events(lifecycle("a"))
    task = state.tasks["a"]
    assert task.state == states.SUCCESS and task.ready
    assert (task.sent, task.received, task.started, task.succeeded) == (
        T0, T0 + 0.1, T0 + 0.2, T0 + 1.2)
    assert task.timestamp == T0 + 1.2
    assert (task.name, task.args, task.kwargs, task.result, task.runtime) == (
        "app.add", "(1, 2)", "{}", "3", 1.0)
    assert task.worker == "w1@h"  # the worker's, never the producer's hostname
    assert task.queue == "celery"
    assert dict(state.state_counts) == {"PENDING": 0, "RECEIVED": 0, "STARTED": 0, "SUCCESS": 1}
    assert state.event_count == 4
    check_invariants(state)


def test_sent_only_task_is_pending_and_waiting_in_its_queue() -> None:
    state = State(clock=Clock())
    state.event(lifecycle("a", queue="emails")[0])
    assert state.tasks["a"].state == states.PENDING
    assert state.tasks["a"].worker is None
    assert state.queues["emails"].waiting == 1
    state.event(lifecycle("a", queue="emails")[1])
    assert state.queues["emails"].waiting == 0
    assert state.queues["emails"].received == 1


def test_failed_task_keeps_exception_traceback_and_gets_a_signature() -> None:
    state = State(clock=Clock())
    state.events(lifecycle("a", outcome="failed"))
    task = state.tasks["a"]
    assert task.state == states.FAILURE
    assert task.exception == "ValueError('bad 1')"
    assert "tasks.py" in (task.traceback or "")
    assert task.signature is not None and task.signature in state.signatures
    sig = state.signatures[task.signature]
    assert (sig.exc_type, sig.message, sig.frame, sig.count) == ("ValueError", "bad <num>",
                                                                 "tasks.py:add", 1)


def test_retry_then_received_again_moves_on_as_celery_does() -> None:
    state = State(clock=Clock())
    state.events(lifecycle("a", outcome="none"))
    state.event(ev("task-retried", "a", T0 + 1, exception="IOError('x')", traceback="tb"))
    assert state.tasks["a"].state == states.RETRY
    state.event(ev("task-received", "a", T0 + 2, name="app.add", retries=1))
    assert state.tasks["a"].state == states.RECEIVED
    assert state.tasks["a"].retries == 1
    assert state.workers["w1@h"].tasks_retried == 1


def test_revoked_and_rejected_keep_their_flags() -> None:
    state = State(clock=Clock())
    state.events(lifecycle("a", outcome="none"))
    state.event(ev("task-revoked", "a", T0 + 1, terminated=True, signum="SIGTERM", expired=False))
    assert state.tasks["a"].state == states.REVOKED
    assert state.tasks["a"].info == {"terminated": True, "signum": "SIGTERM", "expired": False}
    state.event(ev("task-rejected", "b", T0 + 1, requeue=False))
    assert state.tasks["b"].state == states.REJECTED
    assert state.tasks["b"].rejected == T0 + 1


def test_custom_event_sets_custom_state_until_a_final_one() -> None:
    state = State(clock=Clock())
    state.events(lifecycle("a", outcome="none"))
    state.event(ev("task-progress", "a", T0 + 0.5, current=3, total=10))
    assert state.tasks["a"].state == "PROGRESS"
    assert state.tasks["a"].info == {"current": 3, "total": 10}
    # Celery would let PROGRESS (custom precedence) hide a revoke; a final state always wins here.
    state.event(ev("task-revoked", "a", T0 + 1))
    assert state.tasks["a"].state == states.REVOKED


def test_worker_counts_from_task_events() -> None:
    state = State(clock=Clock())
    state.events(lifecycle("a"))
    state.events(lifecycle("b", outcome="failed"))
    state.events(lifecycle("c", outcome="none"))
    worker = state.workers["w1@h"]
    assert (worker.tasks_received, worker.tasks_succeeded, worker.tasks_failed) == (3, 1, 1)
    assert worker.tasks_processed == 2
    assert worker.tasks_active == 1  # c is running
    assert "gen1@producer" not in state.workers


def test_malformed_events_are_counted_not_raised() -> None:
    state = State(clock=Clock())
    state.events([
        {"type": "task-started"},                      # no uuid
        {"hostname": "w1"},                            # no type
        {"type": "worker-heartbeat", "hostname": ["x"]},  # unhashable hostname
        {"type": "bogus-event", "hostname": "w1"},
        ev("task-succeeded", "a", ts="soon", runtime="fast"),  # bad values are tolerated
    ])
    assert state.malformed == 4
    assert state.event_count == 5
    assert state.tasks["a"].state == states.SUCCESS
    assert state.tasks["a"].runtime is None


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan"), -5.0, 1e300])
def test_non_finite_or_absurd_numbers_fall_back_to_the_clock(bad: float) -> None:
    state = State(clock=Clock(T0))
    state.events([ev("task-received", "a", bad, name="x"),
                  ev("task-succeeded", "a", bad, runtime=bad),
                  heartbeat("w1@h", bad, freq=bad, cpu=bad)])
    assert state.malformed == 0
    assert state.tasks["a"].succeeded == T0 and state.tasks["a"].runtime is None
    assert state.workers["w1@h"].status == ONLINE
    assert state.aggregates.throughput(minutes=1)[0].succeeded == 1
    state.snapshot()


def test_celery_chord_body_dict_gives_the_chord_id() -> None:
    state = State(clock=Clock())
    body: dict[str, Any] = {"task": "app.tsum", "args": [], "kwargs": {},
                            "options": {"task_id": "body-1"}, "subtask_type": None}
    state.event(ev("task-received", "m1", name="app.add", root_id="m1", group="g", chord=body))
    assert state.tasks["m1"].chord == "body-1"
    graph = state.workflow("g")
    assert graph is not None
    assert graph.chords[0].body == "body-1" and graph.chords[0].body_name == "app.tsum"


# -- out-of-order delivery ---------------------------------------------------------------
def test_late_events_fill_fields_but_never_move_a_finished_task_back() -> None:
    state = State(clock=Clock())
    sent, received, started, succeeded = lifecycle("a")
    state.events([succeeded, started, received, sent])
    task = state.tasks["a"]
    assert task.state == states.SUCCESS
    assert task.timestamp == T0 + 1.2
    assert (task.name, task.args, task.queue) == ("app.add", "(1, 2)", "celery")
    assert (task.sent, task.received, task.started) == (T0, T0 + 0.1, T0 + 0.2)
    assert state.state_counts[states.SUCCESS] == 1
    check_invariants(state)


def test_late_retry_does_not_regress_success() -> None:
    state = State(clock=Clock())
    state.events(lifecycle("a"))
    state.event(ev("task-retried", "a", T0 + 0.5, exception="IOError('x')"))
    assert state.tasks["a"].state == states.SUCCESS  # Celery would say RETRY
    assert state.tasks["a"].retried == T0 + 0.5


def test_late_event_does_not_overwrite_fields_of_a_more_final_one() -> None:
    state = State(clock=Clock())
    state.event(ev("task-succeeded", "a", T0 + 2, host="w2@h", result="ok", runtime=1.0))
    state.event(ev("task-started", "a", T0 + 1, host="w1@h"))
    assert state.tasks["a"].worker == "w2@h"
    assert state.workers["w2@h"].tasks_active == 0
    assert state.workers["w1@h"].tasks_active == 0


def test_failure_then_success_takes_the_more_final_state() -> None:
    state = State(clock=Clock())
    state.events(lifecycle("a", outcome="failed"))
    state.event(ev("task-succeeded", "a", T0 + 9, result="ok"))
    assert state.tasks["a"].state == states.SUCCESS  # SUCCESS precedes FAILURE in PRECEDENCE
    state.event(ev("task-failed", "a", T0 + 10, exception="X()"))
    assert state.tasks["a"].state == states.SUCCESS


_TERMINAL = {"task-succeeded": states.SUCCESS, "task-failed": states.FAILURE,
             "task-revoked": states.REVOKED}


@st.composite
def shuffled_streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Lifecycles of a few tasks, shuffled and with events dropped; and the terminal state of
    each task whose terminal event survived."""
    events: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 6))):
        uuid, t = f"t{i}", T0 + i
        host = draw(st.sampled_from(["w1@h", "w2@h"]))
        kinds = ["task-sent", "task-received", "task-started"]
        for _ in range(draw(st.integers(0, 2))):
            kinds += ["task-retried", "task-received", "task-started"]
        if draw(st.booleans()):
            kinds.insert(draw(st.integers(3, len(kinds))), "task-progress")
        end = draw(st.sampled_from([*_TERMINAL, None]))
        if end == "task-revoked":  # a revoke can come at any point
            kinds = kinds[:draw(st.integers(1, len(kinds)))]
        if end is not None:
            kinds.append(end)
        for k, kind in enumerate(kinds):
            fields: dict[str, Any] = {}
            if kind in ("task-sent", "task-received"):
                fields = {"name": "app.t", "root_id": uuid, "queue": "q"}
            if kind in ("task-failed", "task-retried"):
                fields = {"exception": f"ValueError('{uuid}')", "traceback": "tb"}
            events.append(ev(kind, uuid, t + k * 0.01, host=host, **fields))
    order = draw(st.permutations(range(len(events))))
    keep = draw(st.lists(st.booleans(), min_size=len(events), max_size=len(events)))
    stream = [events[j] for j in order if keep[j]]
    expected = {e["uuid"]: _TERMINAL[e["type"]] for e in stream if e["type"] in _TERMINAL}
    return stream, expected


@settings(max_examples=300, deadline=None)
@given(shuffled_streams())
def test_shuffled_or_dropped_stream_never_regresses_a_finished_task(
        case: tuple[list[dict[str, Any]], dict[str, str]]) -> None:
    stream, expected = case
    state = State(clock=Clock())
    seen: dict[str, str] = {}
    for event in stream:
        state.event(event)
        for uuid, task in state.tasks.items():
            before = seen.get(uuid)
            if before in states.READY_STATES:
                assert task.state in states.READY_STATES, (before, task.state)
                assert states.precedence(task.state) <= states.precedence(before)
            seen[uuid] = task.state
    for uuid, task in state.tasks.items():
        if uuid in expected:
            assert task.state == expected[uuid]
        else:
            assert task.state not in states.READY_STATES
    assert state.malformed == 0
    check_invariants(state)


@settings(max_examples=150, deadline=None)
@given(shuffled_streams(), st.integers(1, 6))
def test_indexes_stay_consistent_under_eviction(
        case: tuple[list[dict[str, Any]], dict[str, str]], max_tasks: int) -> None:
    stream, _ = case
    state = State(clock=Clock(), max_tasks=max_tasks)
    for event in stream:
        state.event(event)
        assert len(state.tasks) <= max_tasks
    check_invariants(state)


_JUNK = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True),
                  st.text(max_size=5), st.lists(st.integers(0, 3), max_size=3),
                  st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2))
_KEYS = ["uuid", "hostname", "timestamp", "local_received", "name", "args", "queue", "root_id",
         "parent_id", "group", "chord", "runtime", "exception", "exc_type", "exc_message",
         "traceback", "retries", "freq", "seq", "pid", "loadavg", "queues", "cpu", "active"]
_TYPES = ["task-sent", "task-received", "task-started", "task-succeeded", "task-failed",
          "task-retried", "task-revoked", "task-rejected", "task-progress", "worker-online",
          "worker-heartbeat", "worker-offline", "bogus"]


@st.composite
def junk_events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {"type": draw(st.sampled_from(_TYPES)),
                             "uuid": draw(st.sampled_from(["a", "b", "c"])),
                             "hostname": draw(st.sampled_from(["w1@h", "w2@h"])),
                             "timestamp": T0 + draw(st.integers(0, 100))}
    for key in draw(st.lists(st.sampled_from(_KEYS), max_size=6)):
        event[key] = draw(_JUNK)
    return event


@settings(max_examples=300, deadline=None)
@given(st.lists(junk_events(), max_size=25), st.integers(1, 3))
def test_junk_field_values_never_break_the_fold_or_its_readers(
        events: list[dict[str, Any]], max_tasks: int) -> None:
    state = State(clock=Clock(T0 + 50), max_tasks=max_tasks)
    state.events(events)
    assert state.event_count == len(events)
    check_invariants(state)
    snap = state.snapshot()
    assert snap.tasks_stored == len(state.tasks)
    for summary in state.workflows():
        state.workflow(summary.root_id)
    state.aggregates.task_types()
    state.aggregates.throughput()
    state.signatures.top(by="count")
    for task in state.tasks.values():
        task.as_dict()


# -- workers -----------------------------------------------------------------------------
def heartbeat(host: str, ts: float, seq: int | None = None, type_: str = "worker-heartbeat",
              **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "freq": 2.0, "active": 1, "processed": 10, "loadavg": [0.1, 0.2, 0.3],
        "sw_ident": "py-tqcore", "sw_ver": "0.1.0", "sw_sys": "Linux", "pool_size": 4,
        "pool_busy": 1, "queues": ["celery"], "cpu": 12.5, "rss": 1000}
    if seq is not None:
        body["seq"] = seq
    body.update(fields)
    return ev(type_, None, ts, host=host, **body)


def test_heartbeat_fields_and_expiry_with_an_injected_clock() -> None:
    clock = Clock(T0)
    state = State(clock=clock)
    state.event(heartbeat("w1@h", T0, seq=1, type_="worker-online"))
    worker = state.workers["w1@h"]
    assert (worker.freq, worker.pool_size, worker.pool_busy, worker.queues, worker.loadavg) == (
        2.0, 4, 1, ("celery",), (0.1, 0.2, 0.3))
    assert worker.status == ONLINE
    clock.now = T0 + 3.9
    assert worker.status == ONLINE and worker.heartbeat_age == pytest.approx(3.9)
    clock.now = T0 + 4.0  # freq 2 s × 2: two missed heartbeats
    assert worker.status == OFFLINE
    state.event(heartbeat("w1@h", T0 + 4.0, seq=2))
    assert worker.status == ONLINE


def test_local_received_is_the_heartbeat_time_when_present() -> None:
    clock = Clock(T0 + 3)
    state = State(clock=clock)
    # The worker's clock is 10 s behind; the receiver stamped it on arrival.
    state.event(heartbeat("w1@h", T0 - 10, local_received=T0 + 2))
    assert state.workers["w1@h"].status == ONLINE
    assert state.workers["w1@h"].drift == pytest.approx(12)


def test_worker_offline_event_and_late_heartbeat() -> None:
    clock = Clock(T0 + 1)
    state = State(clock=clock)
    state.event(heartbeat("w1@h", T0, seq=1))
    state.event(heartbeat("w1@h", T0 + 1, seq=3, type_="worker-offline"))
    assert state.workers["w1@h"].status == OFFLINE
    state.event(heartbeat("w1@h", T0 + 0.5, seq=2))  # sent before the shutdown, late
    assert state.workers["w1@h"].status == OFFLINE
    state.event(heartbeat("w1@h", T0 + 1.5, seq=1, type_="worker-online"))  # restarted
    assert state.workers["w1@h"].status == ONLINE


def test_workers_are_unknown_never_offline_while_the_stream_is_unhealthy() -> None:
    clock = Clock(T0)
    state = State(clock=clock)
    state.event(heartbeat("w1@h", T0))
    state.event(heartbeat("w2@h", T0, type_="worker-offline"))
    state.set_stream_healthy(False)
    clock.now = T0 + 60
    assert {w.status for w in state.workers.values()} == {UNKNOWN}
    snap = state.snapshot()
    assert dict(snap.worker_status) == {UNKNOWN: 2} and not snap.stream_healthy
    state.set_stream_healthy(True)
    # A fresh window after the outage rather than 200 false "worker lost" at once.
    assert state.workers["w1@h"].status == ONLINE
    clock.now = T0 + 64
    assert state.workers["w1@h"].status == OFFLINE


def test_worker_seen_only_through_task_events_is_online_while_they_flow() -> None:
    clock = Clock(T0 + 1)
    state = State(clock=clock)
    state.events(lifecycle("a", host="w9@h"))
    assert state.workers["w9@h"].status == ONLINE
    clock.now = T0 + 10
    assert state.workers["w9@h"].status == OFFLINE


def test_heartbeat_sequence_gaps() -> None:
    state = State(clock=Clock())
    for seq in (1, 2, 5, 6, 9):
        state.event(heartbeat("w1@h", T0 + seq, seq=seq))
    worker = state.workers["w1@h"]
    assert worker.seq_gaps == 4  # 3, 4, 7, 8
    state.event(heartbeat("w1@h", T0 + 7, seq=7))  # late, fills its gap
    assert worker.seq_gaps == 3
    state.event(heartbeat("w1@h", T0 + 20, seq=1, type_="worker-online"))  # restart resets
    state.event(heartbeat("w1@h", T0 + 22, seq=2))
    assert worker.seq_gaps == 3 and worker.seq == 2
    assert state.snapshot().seq_gaps == 3


def test_workers_are_bounded_dropping_offline_first() -> None:
    state = State(clock=Clock(T0), max_workers=2)
    state.event(heartbeat("old@h", T0 - 100, type_="worker-offline"))
    state.event(heartbeat("a@h", T0 - 200))
    state.event(heartbeat("b@h", T0))
    assert set(state.workers) == {"a@h", "b@h"}


# -- queues ------------------------------------------------------------------------------
def test_queue_counts_waiting_and_rates() -> None:
    clock = Clock(T0 + 30)
    state = State(clock=clock)
    for i in range(30):
        state.event(lifecycle(f"s{i}", t=T0 + i, queue="emails")[0])
    for i in range(10):
        state.events(lifecycle(f"s{i}", t=T0 + i, queue="emails")[1:])
    (info,) = state.queue_infos()
    assert (info.name, info.sent, info.received, info.started, info.succeeded) == (
        "emails", 30, 10, 10, 10)
    assert info.waiting == 20
    assert info.in_rate == pytest.approx(30 / 60)
    assert info.out_rate == pytest.approx(10 / 60)
    clock.now = T0 + 200
    assert state.queue_infos()[0].in_rate == 0


# -- bounds ------------------------------------------------------------------------------
def test_eviction_drops_successes_first_and_keeps_failures_longest() -> None:
    state = State(clock=Clock(), max_tasks=10)
    for i in range(4):
        state.events(lifecycle(f"fail{i}", t=T0 + i, outcome="failed"))
    state.events(lifecycle("running", t=T0 + 5, outcome="none"))
    for i in range(20):
        state.events(lifecycle(f"ok{i}", t=T0 + 10 + i))
    assert len(state.tasks) == 10
    assert {f"fail{i}" for i in range(4)} | {"running"} <= set(state.tasks)
    assert {f"ok{i}" for i in range(15, 20)} <= set(state.tasks)  # the newest successes
    assert state.evicted == 15
    # Failures over the bound: unfinished goes before any failure, then the oldest failure.
    for i in range(4, 11):
        state.events(lifecycle(f"fail{i}", t=T0 + 40 + i, outcome="failed"))
    assert not any(u.startswith("ok") for u in state.tasks)
    assert "running" not in state.tasks
    assert "fail0" not in state.tasks and "fail10" in state.tasks
    check_invariants(state)


def test_eviction_never_changes_aggregates_or_workflow_progress() -> None:
    clock = Clock(T0 + 60)
    state = State(clock=clock, max_tasks=5)
    for i in range(50):
        state.events(lifecycle(f"c{i}", t=T0 + i, root_id="root" if i else "c0",
                               parent_id=None if i == 0 else "c0"))
    state.events(lifecycle("root", t=T0))
    assert len(state.tasks) == 5
    assert sum(p.succeeded for p in state.aggregates.throughput(minutes=5)) == 51
    summary = state.workflows()[0]
    assert (summary.total, summary.done, summary.state) == (50, 50, states.SUCCESS)


# -- failure signatures ------------------------------------------------------------------
@pytest.mark.parametrize("message, normalised", [
    ("order 123 not found", "order <num> not found"),
    ("user 'bob' has no card", "user <str> has no card"),
    ('no such key "a:b:c"', "no such key <str>"),
    ("task 1b4e28ba-2fa1-11d2-883f-0016d3cca427 lost", "task <uuid> lost"),
    ("object at 0x7f3a9c2b1d60 closed", "object at <hex> closed"),
    ("blob deadbeef12 missing", "blob <hex> missing"),
    ("can't parse 3.14 as int", "can't parse <num> as int"),
    ("user_7 over quota", "user_<num> over quota"),
    ("codec h264 and v2 api", "codec h264 and v2 api"),
    ("facade   failed\n twice", "facade failed twice"),
])
def test_normalise_message(message: str, normalised: str) -> None:
    assert normalise_message(message) == normalised


@given(st.integers(0, 10**12), st.integers(0, 10**12), st.uuids(), st.uuids(),
       st.text("abcdefghij", min_size=1, max_size=8), st.text("abcdefghij", min_size=1, max_size=8))
def test_messages_differing_only_in_ids_share_a_signature(
        a: int, b: int, u1: Any, u2: Any, s1: str, s2: str) -> None:
    tb = 'Traceback:\n  File "/srv/app/billing.py", line {}, in charge\nCardDeclined: x\n'
    one = signature_of("CardDeclined", f"card {u1} declined for order {a} of '{s1}'", None,
                       tb.format(10))
    two = signature_of("CardDeclined", f"card {u2} declined for order {b} of '{s2}'", None,
                       tb.format(99))  # the line moved in a deploy
    assert one == two


def test_signature_depends_on_type_and_top_frame() -> None:
    tb = '  File "/a/x.py", line 1, in f\n  File "/srv/app/{}", line 2, in {}\n'
    base = signature_of("E", "boom", None, tb.format("a.py", "f"))
    assert signature_of("F", "boom", None, tb.format("a.py", "f"))[0] != base[0]
    assert signature_of("E", "boom", None, tb.format("b.py", "f"))[0] != base[0]
    assert signature_of("E", "boom", None, tb.format("a.py", "g"))[0] != base[0]
    assert base[3] == "a.py:f"


def test_celery_repr_and_tqcore_fields_give_the_same_signature() -> None:
    tb = 'File "C:\\app\\tasks.py", line 3, in div'
    celery = signature_of(None, None, "ZeroDivisionError('division by 7')", tb)
    tq = signature_of("ZeroDivisionError", "division by 8", None, tb)
    assert celery == tq and celery[1:] == ("ZeroDivisionError", "division by <num>", "tasks.py:div")
    assert parse_exception("KeyError('user_1')") == ("KeyError", "'user_1'")  # str() keeps quotes
    assert parse_exception("OSError(2, 'No such file')") == ("OSError", "2, 'No such file'")
    assert parse_exception("not a repr") == ("", "not a repr")
    assert top_frame(None) == "" and top_frame("no frames") == ""


def test_signature_counts_names_workers_series_and_bounded_samples() -> None:
    clock = Clock(T0 + 600)
    state = State(clock=clock, signature_samples=3)
    for i in range(10):
        host = "w1@h" if i % 2 else "w2@h"
        state.events(lifecycle(f"f{i}", t=T0 + i * 60, outcome="failed", host=host,
                               name="app.a" if i < 7 else "app.b"))
    (sig,) = state.signatures.values()
    info = sig.info()
    assert info.count == 10
    assert info.first_seen == T0 + 1.2 and info.last_seen == T0 + 9 * 60 + 1.2
    assert dict(info.task_names) == {"app.a": 7, "app.b": 3}
    assert dict(info.workers) == {"w1@h": 5, "w2@h": 5}
    assert [n for _, n in info.per_minute] == [1] * 10
    assert info.samples == ("f7", "f8", "f9")
    assert state.snapshot().signatures[0].id == sig.id
    assert all(state.tasks[f"f{i}"].signature == sig.id for i in range(10))


def test_signatures_are_bounded() -> None:
    state = State(clock=Clock(), max_signatures=3)
    for i, exc in enumerate("ABCDE"):
        state.event(ev("task-failed", f"t{i}", T0 + i, exc_type=exc, exc_message="boom"))
    assert [s.exc_type for s in state.signatures.values()] == ["C", "D", "E"]
    assert [s.exc_type for s in state.signatures.top(2)] == ["E", "D"]


# -- workflows ---------------------------------------------------------------------------
def workflow_events() -> list[dict[str, Any]]:
    """chain(validate, group(charge ×3), notify) as tqcore emits it: the group is a chord
    header whose body is notify; one charge fails."""
    root, gid, body = "validate-1", "group-1", "notify-1"
    out = lifecycle(root, t=T0, name="app.validate", root_id=root)
    for i in range(3):
        out += lifecycle(f"charge-{i}", t=T0 + 2, name="app.charge", root_id=root,
                         parent_id=root, group=gid, group_index=i, chord=body,
                         outcome="failed" if i == 2 else "succeeded")
    return out


def test_workflow_graph_from_chain_group_chord_events() -> None:
    clock = Clock(T0 + 10)
    state = State(clock=clock)
    state.events(workflow_events())
    graph = state.workflow("validate-1")
    assert graph is not None
    nodes = {n.id: n for n in graph.nodes}
    assert set(nodes) == {"validate-1", "charge-0", "charge-1", "charge-2", "notify-1"}
    assert nodes["notify-1"].state is None  # announced by the header, not sent yet
    assert nodes["charge-2"].state == states.FAILURE and nodes["charge-2"].group_index == 2
    edges = {(e.source, e.target, e.kind) for e in graph.edges}
    assert edges == {("validate-1", f"charge-{i}", "parent") for i in range(3)} | {
        (f"charge-{i}", "notify-1", "chord") for i in range(3)}
    (group,) = graph.groups
    assert (group.id, group.members, group.chord) == (
        "group-1", ("charge-0", "charge-1", "charge-2"), "notify-1")
    assert dict(group.counts) == {states.SUCCESS: 2, states.FAILURE: 1}
    assert (group.total, group.done, group.failed) == (3, 3, 1)
    (chord,) = graph.chords
    assert (chord.body, chord.header, chord.waiting_on) == ("notify-1", "group-1", 0)
    summary = graph.summary
    assert (summary.name, summary.total, summary.done, summary.failed, summary.state) == (
        "app.validate", 5, 4, 1, states.FAILURE)
    assert state.children("validate-1") == ("charge-0", "charge-1", "charge-2")
    with pytest.raises(AttributeError):
        graph.summary.total = 3  # type: ignore[misc]

    state.events(lifecycle("notify-1", t=T0 + 5, name="app.notify", root_id="validate-1"))
    graph = state.workflow("validate-1")
    assert graph is not None
    assert {n.id: n.state for n in graph.nodes}["notify-1"] == states.SUCCESS
    assert (graph.summary.total, graph.summary.done) == (5, 5)


def test_workflows_list_progress_and_duration() -> None:
    clock = Clock(T0 + 10)
    state = State(clock=clock)
    state.events(workflow_events()[:11])  # validate done, charge-0 done, charge-1 running
    state.events(lifecycle("solo", t=T0))  # a plain task is not a workflow
    (summary,) = state.workflows()
    assert summary.root_id == "validate-1"
    assert (summary.done, summary.total, summary.failed, summary.state) == (
        2, 4, 0, states.STARTED)
    assert summary.started_at == T0 and summary.finished_at is None
    assert summary.duration == pytest.approx(10)
    assert state.workflow("solo") is None and state.workflow_of("solo") is None
    assert state.workflow_of("charge-1") == "validate-1"
    assert state.snapshot().workflow_count == 1


@pytest.mark.parametrize("convention", ["root is the first member", "each member its own root"])
def test_group_sent_on_its_own_is_one_workflow(convention: str) -> None:
    state = State(clock=Clock(T0 + 10))
    for i in (1, 0, 2):  # out of order: the first member is not the first seen
        root = "m0" if convention == "root is the first member" else f"m{i}"
        state.events(lifecycle(f"m{i}", t=T0 + i, name="app.add", root_id=root, group="g1",
                               chord="body"))
    state.events(lifecycle("body", t=T0 + 3, name="app.tsum"))  # a body is its own root
    (summary,) = state.workflows()
    assert summary.root_id == "g1"
    graph = state.workflow("g1")
    assert graph is not None and state.workflow("m0") == graph
    assert {n.id for n in graph.nodes} == {"m0", "m1", "m2", "body"}
    assert (graph.summary.total, graph.summary.done, graph.summary.state) == (
        4, 4, states.SUCCESS)
    assert {(e.source, e.target) for e in graph.edges if e.kind == "chord"} == {
        ("m0", "body"), ("m1", "body"), ("m2", "body")}
    group = state.group("g1")
    assert group is not None and set(group.members) == {"m0", "m1", "m2"}
    assert {state.workflow_of(t) for t in ("m0", "m1", "m2", "body")} == {"g1"}


@settings(max_examples=200, deadline=None)
@given(st.booleans(), st.integers(2, 5), st.randoms(use_true_random=False), st.data())
def test_a_standalone_chord_is_one_workflow_in_any_order(
        first_is_root: bool, size: int, rnd: Any, data: st.DataObject) -> None:
    events = []
    for i in range(size):
        root = "m0" if first_is_root else f"m{i}"
        events += lifecycle(f"m{i}", t=T0 + i, root_id=root, group="g", chord="body")
    events += lifecycle("body", t=T0 + 9, name="app.tsum")
    rnd.shuffle(events)
    kept = [e for e in events if data.draw(st.booleans())] or events[:1]
    state = State(clock=Clock(T0 + 20))
    state.events(kept)
    seen = {e["uuid"] for e in kept}
    summaries = state.workflows()
    headers_with_root = {e["uuid"] for e in kept if e["type"] in ("task-sent", "task-received")
                         and e["uuid"] != "body"}
    if not headers_with_root:
        return  # no event carried the workflow fields
    (summary,) = summaries
    assert summary.root_id == "g"
    linked = headers_with_root | ({"body"} & seen if "body" in seen else set())
    announced = 0 if "body" in linked else 1
    assert summary.total == len(linked) + announced
    assert sum(summary.counts.values()) == len(linked)
    for uuid in headers_with_root:
        assert state.workflow_of(uuid) == "g"


def test_workflow_from_the_fields_tqcores_producer_sends() -> None:
    """A chord and a chain sent through tqcore's canvas, events captured off the memory broker."""
    from tqcore import App, chain, chord

    app = App("wf", broker="memory://")
    app.conf.task_send_sent_event = True

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def tsum(xs: list[int]) -> int:
        return sum(xs)

    sub = app.transport.subscribe_events()
    result = chord([add.s(1, 1), add.s(2, 2)], tsum.s()).apply_async()
    chain(add.s(1, 2), add.s(3)).apply_async()
    state = State(clock=Clock(T0))
    for body in sub.get(timeout=1.0):
        decoded = json.loads(body)
        state.events(decoded if isinstance(decoded, list) else [decoded])
    headers = [t for t in state.tasks.values() if t.chord == result.id]
    assert len(headers) == 2 and headers[0].group is not None
    assert state.workflows()[0].root_id == headers[0].group  # the chain's head is alone yet
    graph = state.workflow(headers[0].root_id or "")  # the members' root id finds it too
    assert graph is not None
    assert {n.id for n in graph.nodes} == {h.uuid for h in headers} | {result.id}
    assert [c.body for c in graph.chords] == [result.id]
    assert graph.summary.total == 3  # two header tasks and the announced body


# -- aggregates --------------------------------------------------------------------------
def test_runtime_percentiles_throughput_and_failure_rate() -> None:
    clock = Clock(T0 + 3 * 60)
    state = State(clock=clock)
    for i in range(1, 101):  # runtimes 10 ms .. 1 s, two minutes
        ts = T0 + (i % 2) * 60 + 1
        state.event(ev("task-received", f"a{i}", ts - 1, name="app.a"))
        state.event(ev("task-succeeded", f"a{i}", ts, runtime=i / 100))
    for i in range(25):
        state.event(ev("task-received", f"b{i}", T0 + 1, name="app.b"))
        state.event(ev("task-failed" if i < 5 else "task-succeeded", f"b{i}", T0 + 2,
                       runtime=0.5, exception="E('x')"))
    agg = state.aggregates
    p = agg.percentiles("app.a")
    assert p.count == 100
    assert p.p50 == pytest.approx(0.50, rel=0.03)
    assert p.p95 == pytest.approx(0.95, rel=0.03)
    assert p.p99 == pytest.approx(0.99, rel=0.03)
    assert agg.failure_rate("app.b") == pytest.approx(0.2)
    assert agg.failure_rate() == pytest.approx(5 / 125)
    assert agg.failure_rate("nothing") is None
    points = agg.throughput(minutes=5)  # the minute of T0 .. now (T0 + 3 min), oldest first
    assert [(pt.succeeded, pt.failed) for pt in points] == [
        (0, 0), (70, 5), (50, 0), (0, 0), (0, 0)]
    assert points[1].minute == (int(T0) // 60) * 60
    by_name = {s.name: s for s in agg.task_types()}
    assert by_name["app.b"].failed == 5 and by_name["app.b"].runtime.p50 == pytest.approx(0.5,
                                                                                         rel=0.03)


def test_aggregates_keep_a_bounded_window() -> None:
    clock = Clock(T0)
    state = State(clock=clock, window_minutes=5)
    for minute in range(12):
        state.event(ev("task-succeeded", f"t{minute}", T0 + minute * 60, name="x", runtime=1.0))
    assert len(state.aggregates._minutes) == 5
    clock.now = T0 + 11 * 60
    assert sum(p.succeeded for p in state.aggregates.throughput()) == 5
    state.event(ev("task-succeeded", "late", T0, name="x", runtime=1.0))  # older than the window
    assert sum(p.succeeded for p in state.aggregates.throughput()) == 5


# -- snapshot ----------------------------------------------------------------------------
def test_snapshot_is_an_immutable_summary() -> None:
    clock = Clock(T0 + 5)
    state = State(clock=clock)
    state.event(heartbeat("w1@h", T0 + 4, seq=1))
    state.events(lifecycle("a", t=T0))
    state.events(lifecycle("b", t=T0, outcome="failed"))
    snap = state.snapshot()
    assert dict(snap.state_counts) == {states.SUCCESS: 1, states.FAILURE: 1}
    assert snap.tasks_stored == 2 and snap.event_count == 9
    assert [w.hostname for w in snap.workers] == ["w1@h"]
    assert snap.workers[0].status == ONLINE and snap.workers[0].tasks_active == 0
    assert snap.lag == pytest.approx(5 - 1.2)
    assert snap.queues[0].name == "celery" and len(snap.signatures) == 1
    with pytest.raises(TypeError):
        snap.state_counts["SUCCESS"] = 5  # type: ignore[index]
    state.events(lifecycle("c", t=T0))
    assert snap.state_counts[states.SUCCESS] == 1  # not a live view


def test_state_rejects_nonsense_bounds() -> None:
    with pytest.raises(ValueError):
        State(max_tasks=0)
