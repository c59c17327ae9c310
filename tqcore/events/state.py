"""``State``: the cluster as a pure fold of Celery events.

Feed it event dicts (Celery's or tqcore's, see ``reference/celery-wire.md`` §1.8) with
:meth:`State.event` / :meth:`State.events`; read ``tasks``, ``workers``, ``queues``,
``signatures``, ``aggregates``, :meth:`State.workflow` and :meth:`State.snapshot`.

It is pure: no threads, no locks, no I/O, and time comes from the injected ``clock``. One owner
(tqmon's source thread, ``tqcore status``, a test) calls it; readers on other threads get
:meth:`snapshot`, which is immutable. It is bounded: tasks live in four LRU classes evicted in
order (successes, other finished, unfinished, failures), so failures stay longest, while
per-minute aggregates, workflow progress and failure signatures are kept apart and never
change when a row is evicted.

The hot path is one dict lookup to a handler per event type, slotted records and a precomputed
merge table (:data:`tqcore.events.tasks.APPLY`); late events (lower precedence) only fill the
fields a record lacks, so a late event never overwrites what a more final one said.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

from tqcore import states
from tqcore.events.aggregates import Aggregates
from tqcore.events.linking import WorkflowIndex
from tqcore.events.queues import QueueInfo, QueueStats
from tqcore.events.signatures import Signatures
from tqcore.events.snapshot import Snapshot, make_snapshot
from tqcore.events.tasks import (
    APPLY,
    EVICT_LIVE,
    EVICTION_CLASS,
    R_FAILURE,
    R_NEW,
    R_PENDING,
    R_RECEIVED,
    R_REJECTED,
    R_RETRY,
    R_REVOKED,
    R_STARTED,
    R_SUCCESS,
    Task,
    apply_headers,
    extra_fields,
    fill_headers,
    fill_late,
    set_exception,
    to_number,
    to_runtime,
)
from tqcore.events.workers import EXPIRE_FACTOR, Liveness, Worker
from tqcore.events.workflows import WorkflowGraph, WorkflowGroup, WorkflowSummary

Event = Mapping[str, Any]

PENDING, RECEIVED, STARTED = states.PENDING, states.RECEIVED, states.STARTED
SUCCESS, FAILURE, RETRY = states.SUCCESS, states.FAILURE, states.RETRY
REVOKED, REJECTED = states.REVOKED, states.REJECTED


class State:
    """The cluster folded from events: workers, tasks, queues, workflows, failures, aggregates.

    Args:
        clock: returns now in epoch seconds (``time.time``; tests inject a fake).
        max_tasks: task rows kept; beyond, rows are evicted successes first, failures last.
        max_workers: worker records kept; beyond, the offline one seen longest ago goes.
        max_workflows: workflow roots and groups tracked (each); oldest dropped first.
        max_signatures: failure signatures kept (least recently seen dropped).
        signature_samples: task ids kept per signature.
        window_minutes: span of the per-minute aggregates and signature series.
        expire_factor: a worker expires ``freq * expire_factor`` s after its last heartbeat.
    """

    def __init__(self, clock: Callable[[], float] = time.time, max_tasks: int = 100_000,
                 max_workers: int = 5_000, max_workflows: int = 10_000,
                 max_signatures: int = 1_000, signature_samples: int = 20,
                 window_minutes: int = 60, expire_factor: float = EXPIRE_FACTOR) -> None:
        if max_tasks < 1 or max_workers < 1 or max_workflows < 1:
            raise ValueError("max_tasks, max_workers and max_workflows must be at least 1")
        self._clock = clock
        self.max_tasks = max_tasks
        self.max_workers = max_workers
        self.max_workflows = max_workflows
        #: Task rows by id (read-only for callers).
        self.tasks: dict[str, Task] = {}
        #: Workers by hostname.
        self.workers: dict[str, Worker] = {}
        #: Per-queue figures by queue name.
        self.queues: dict[str, QueueStats] = {}
        #: Failure signatures by id.
        self.signatures = Signatures(max_signatures, signature_samples, window_minutes)
        #: Per-minute throughput, failure rate and runtime percentiles per task type.
        self.aggregates = Aggregates(clock, window_minutes)
        #: Stored task rows per state.
        self.state_counts: dict[str, int] = {}
        self.event_count = 0
        #: Events ignored: unknown type, no uuid/hostname, or values of the wrong type.
        self.malformed = 0
        self.evicted = 0
        #: Timestamp of the latest event delivered (for lag: now minus this).
        self.last_event_at: float | None = None
        self._liveness = Liveness(clock, expire_factor)
        # One LRU per eviction class (EVICT_SUCCESS, EVICT_FINISHED, EVICT_LIVE, EVICT_FAILED).
        self._lru: tuple[OrderedDict[str, None], ...] = tuple(OrderedDict() for _ in range(4))
        self._flows = WorkflowIndex(max_workflows)
        # Task handlers take (task, timestamp, event): the loop in events() finds both.
        self._task_handlers: dict[str, Callable[[Task, float, Event], None]] = {
            "task-sent": self._on_sent,
            "task-received": self._on_received,
            "task-started": self._on_started,
            "task-succeeded": self._on_succeeded,
            "task-failed": self._on_failed,
            "task-retried": self._on_retried,
            "task-revoked": partial(self._on_other, "revoked", REVOKED, R_REVOKED),
            "task-rejected": partial(self._on_other, "rejected", REJECTED, R_REJECTED),
        }
        self._worker_subjects = {"worker-online": "online", "worker-heartbeat": "heartbeat",
                                 "worker-offline": "offline"}

    # -- input ---------------------------------------------------------------------
    def event(self, event: Event) -> None:
        """Fold one event dict."""
        self.events((event,))

    def events(self, events: Iterable[Event]) -> None:
        """Fold event dicts in order (a ``task.multi`` body is such a list). An event of an
        unknown type, without its uuid or hostname, or with a field of the wrong type is counted
        in ``malformed`` and skipped; it never raises."""
        handlers = self._task_handlers
        tasks = self.tasks
        count = 0
        try:
            for event in events:
                count += 1
                try:
                    kind = event["type"]
                    handler = handlers.get(kind)
                    if handler is None:
                        self._other_event(kind, event)
                        continue
                    # The common prologue of every task event, inline: this loop is the hot path.
                    uuid = event["uuid"]
                    task = tasks.get(uuid)
                    if task is None:
                        task = self._new_task(uuid)
                    ts = event.get("timestamp")
                    if ts.__class__ is not float or not 0.0 <= ts < 1e11:  # also NaN and inf
                        ts = self._instant(ts)
                    self.last_event_at = ts
                    handler(task, ts, event)
                except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
                    self.malformed += 1  # untrusted input: a bad event must not stop the fold
        finally:
            self.event_count += count

    def _other_event(self, kind: str, event: Event) -> None:
        subject = self._worker_subjects.get(kind)
        if subject is not None:
            self._on_worker(subject, event)
        elif kind.startswith("task-"):  # Task.send_event: state is the upper-cased subject
            state = kind[5:].upper()
            task = self.tasks.get(event["uuid"]) or self._new_task(event["uuid"])
            ts = self._instant(event.get("timestamp"))
            self.last_event_at = ts
            self._on_other(None, state, states.precedence(state), task, ts, event)
        else:
            self.malformed += 1

    def set_stream_healthy(self, healthy: bool) -> None:
        """Say whether the event stream is flowing. While not, workers are ``unknown``, never
        ``offline``; when it flows again each worker gets a fresh heartbeat window."""
        lv = self._liveness
        if healthy and not lv.healthy:
            lv.resumed_at = self._clock()
        lv.healthy = healthy

    @property
    def stream_healthy(self) -> bool:
        return self._liveness.healthy

    # -- task events ---------------------------------------------------------------
    def _instant(self, value: Any) -> float:
        """An event timestamp, or now when it is missing or not a sane epoch time."""
        ts = to_number(value)
        return ts if ts is not None and 0.0 <= ts < 1e11 else self._clock()

    def _new_task(self, uuid: Any) -> Task:
        if not isinstance(uuid, str) or not uuid:
            raise ValueError("task event without a uuid")
        if len(self.tasks) >= self.max_tasks:
            self._evict()
        task = self.tasks[uuid] = Task(uuid)
        self._lru[EVICT_LIVE][uuid] = None
        return task

    def _on_sent(self, task: Task, ts: float, event: Event) -> None:
        if APPLY[task.rank][R_PENDING]:
            task.sent = ts
            apply_headers(task, event)
            self._flows.link(task, event, self.tasks)
            self._apply(task, PENDING, R_PENDING, None, ts)
        else:
            if task.sent is None:
                task.sent = ts
            self._late(task, event, None, ts)

    def _on_received(self, task: Task, ts: float, event: Event) -> None:
        if APPLY[task.rank][R_RECEIVED]:
            task.received = ts
            apply_headers(task, event)
            if task.root_id is None:  # else task-sent linked it (the same message's fields)
                self._flows.link(task, event, self.tasks)
            self._apply(task, RECEIVED, R_RECEIVED, event.get("hostname"), ts)
        else:  # Celery's merge rule for a late RECEIVED: only the message's own fields
            self._late(task, event, "received", ts)

    def _on_started(self, task: Task, ts: float, event: Event) -> None:
        if APPLY[task.rank][R_STARTED]:
            if task.name is None:
                self._fill(task, event)
            task.started = ts
            self._apply(task, STARTED, R_STARTED, event.get("hostname"), ts)
        else:
            self._late(task, event, "started", ts)

    def _on_succeeded(self, task: Task, ts: float, event: Event) -> None:
        if APPLY[task.rank][R_SUCCESS]:
            if task.name is None:
                self._fill(task, event)
            get = event.get
            task.succeeded = ts
            task.result = get("result")
            runtime = get("runtime")
            if runtime is not None:
                if runtime.__class__ is not float or not 0.0 <= runtime < 1e9:
                    runtime = to_runtime(runtime)
                task.runtime = runtime
            if self._apply(task, SUCCESS, R_SUCCESS, get("hostname"), ts):
                self.aggregates.succeeded(task.name, ts, runtime)
        else:
            self._late(task, event, "succeeded", ts)

    def _on_failed(self, task: Task, ts: float, event: Event) -> None:
        if APPLY[task.rank][R_FAILURE]:
            if task.name is None:
                self._fill(task, event)
            set_exception(task, event)
            task.failed = ts
            runtime = event.get("runtime")
            if runtime is not None:
                if runtime.__class__ is not float or not 0.0 <= runtime < 1e9:
                    runtime = to_runtime(runtime)
                task.runtime = runtime
            if self._apply(task, FAILURE, R_FAILURE, event.get("hostname"), ts):
                task.signature = self.signatures.record(task, ts)
                self.aggregates.failed(task.name, ts, runtime)
        else:
            self._late(task, event, "failed", ts)

    def _on_retried(self, task: Task, ts: float, event: Event) -> None:
        if APPLY[task.rank][R_RETRY]:
            if task.name is None:
                self._fill(task, event)
            set_exception(task, event)
            task.retried = ts
            if self._apply(task, RETRY, R_RETRY, event.get("hostname"), ts):
                self.aggregates.retried(task.name, ts)
        else:
            self._late(task, event, "retried", ts)

    def _on_other(self, subject: str | None, state: str, rank: int, task: Task, ts: float,
                  event: Event) -> None:
        """task-revoked, task-rejected and ``task-<custom>`` (state: the upper-cased subject, as
        in Celery): the state, with the event's own fields in ``info``."""
        if APPLY[task.rank][rank]:
            if task.name is None:
                self._fill(task, event)
            if subject is not None:
                setattr(task, subject, ts)
            task.info = extra_fields(event)
            self._apply(task, state, rank, event.get("hostname"), ts)
        else:
            self._late(task, event, subject, ts)

    def _fill(self, task: Task, event: Event) -> None:
        """The message's fields, where the record has none (a task first seen mid-life)."""
        fill_headers(task, event)
        self._flows.link(task, event, self.tasks)

    def _late(self, task: Task, event: Event, subject: str | None, ts: float) -> None:
        """An event that happened before the current state: fill gaps, set no state."""
        self._fill(task, event)
        if subject is not None:
            fill_late(task, event, subject, ts)
            host = event.get("hostname")
            if host.__class__ is str:
                self._seen(host, ts)
        self._lru[task.bucket].move_to_end(task.uuid)

    def _seen(self, host: str, ts: float) -> Worker:
        """The worker ``host`` (created if new), which sent an event at ``ts``."""
        worker = self.workers.get(host)
        if worker is None:
            worker = self._new_worker(host)
        if ts > worker.last_seen:
            worker.last_seen = ts
        return worker

    def _apply(self, task: Task, state: str, rank: int, host: str | None, ts: float) -> bool:
        """Set ``task``'s state from an event at ``ts`` by worker ``host``; True if it changed."""
        worker = None
        if host is not None:
            if host.__class__ is not str:
                raise TypeError("hostname is not a string")
            worker = self.workers.get(host)
            if worker is None:
                worker = self._new_worker(host)
            if ts > worker.last_seen:
                worker.last_seen = ts
            task.worker = host
        task.timestamp = ts
        lru = self._lru
        changed = rank != task.rank or state != task.state
        if changed:
            old = task.state if task.rank != R_NEW else None
            task.state = state
            task.rank = rank
            counts = self.state_counts
            if old is not None:
                counts[old] -= 1
            counts[state] = counts.get(state, 0) + 1
            if task.wf is not None:
                task.wf.move(old, state, ts)
            if task.grp is not None:
                task.grp.move(old, state, ts)
            if task.queue is not None:
                queue = self.queues.get(task.queue)
                if queue is None:
                    queue = self.queues[task.queue] = QueueStats(task.queue)
                qcounts = queue.counts
                qcounts[state] = qcounts.get(state, 0) + 1
                if rank == R_PENDING:
                    queue.inflow.add(ts)
                elif rank == R_RECEIVED:
                    queue.outflow.add(ts)
            if worker is not None:
                worker.counts[state] = worker.counts.get(state, 0) + 1
            bucket = EVICTION_CLASS[rank]
            if bucket != task.bucket:
                del lru[task.bucket][task.uuid]
                lru[bucket][task.uuid] = None
                task.bucket = bucket
            else:
                lru[bucket].move_to_end(task.uuid)
        else:
            lru[task.bucket].move_to_end(task.uuid)
        # Where it runs and where it waits, held as references so the counts stay balanced.
        if rank == R_STARTED:
            if worker is not None and task.active_on is not worker:
                if task.active_on is not None:
                    task.active_on.tasks_active -= 1
                worker.tasks_active += 1
                task.active_on = worker
        elif task.active_on is not None:
            task.active_on.tasks_active -= 1
            task.active_on = None
        if rank == R_PENDING:
            if task.waiting_in is None and task.queue is not None:
                task.waiting_in = self.queues[task.queue]
                task.waiting_in.waiting += 1
        elif task.waiting_in is not None:
            task.waiting_in.waiting -= 1
            task.waiting_in = None
        return changed

    # -- worker events -------------------------------------------------------------
    def _on_worker(self, subject: str, event: Event) -> None:
        host = event["hostname"]
        worker = self.workers.get(host)
        if worker is None:
            if not isinstance(host, str) or not host:
                raise ValueError("worker event without a hostname")
            worker = self._new_worker(host)
        worker.on_event(subject, event)
        self.last_event_at = worker.last_seen

    def _new_worker(self, host: str) -> Worker:
        workers = self.workers
        if len(workers) >= self.max_workers:
            oldest = min(workers.values(), key=lambda w: (not w.offline, w.last_seen))
            del workers[oldest.hostname]
        worker = workers[host] = Worker(host, self._liveness)
        return worker

    # -- bounds --------------------------------------------------------------------
    def _evict(self) -> None:
        """Drop one row: the oldest success, else other finished, unfinished, then failure."""
        for lru in self._lru:
            if lru:
                uuid = lru.popitem(last=False)[0]
                break
        else:
            return
        task = self.tasks.pop(uuid)
        self.evicted += 1
        if task.rank != R_NEW:
            self.state_counts[task.state] -= 1
        if task.active_on is not None:
            task.active_on.tasks_active -= 1
        if task.waiting_in is not None:
            task.waiting_in.waiting -= 1
        self._flows.forget(task)

    # -- reading -------------------------------------------------------------------
    def children(self, task_id: str) -> tuple[str, ...]:
        """Ids of the stored tasks whose ``parent_id`` is ``task_id``."""
        return tuple(self._flows.children.get(task_id, ()))

    def workflow(self, root_id: str) -> WorkflowGraph | None:
        """The graph of the workflow rooted at ``root_id`` (for a group or chord sent on its
        own: its group id, or its members' root id); None when not a known workflow."""
        return self._flows.graph(root_id, self.tasks, self._clock())

    def workflow_of(self, task_id: str) -> str | None:
        """The root id of the workflow a stored task belongs to, or None."""
        task = self.tasks.get(task_id)
        wf = None if task is None else task.wf
        return wf.id if wf is not None and self._flows.roots.get(wf.id) is wf else None

    def workflows(self, limit: int | None = None) -> tuple[WorkflowSummary, ...]:
        """Workflow roots with progress, most recently active first."""
        return self._flows.summaries(self.tasks, self._clock(), limit)

    @property
    def workflow_count(self) -> int:
        """Workflow roots tracked."""
        return len(self._flows.roots)

    def group(self, group_id: str) -> WorkflowGroup | None:
        """Members and state counts of a group (None when unknown)."""
        progress = self._flows.groups.get(group_id)
        return None if progress is None else progress.group_view()

    def queue_infos(self) -> tuple[QueueInfo, ...]:
        """Every queue's figures as of now, by name."""
        now = self._clock()
        return tuple(self.queues[name].info(now) for name in sorted(self.queues))

    def snapshot(self, signatures: int = 20) -> Snapshot:
        """An immutable summary, cheap enough for a few calls a second.

        Args:
            signatures: how many of the most recent failure signatures to include.
        """
        return make_snapshot(self, self._clock(), signatures)

    def __repr__(self) -> str:
        return (f"<State events={self.event_count} tasks={len(self.tasks)} "
                f"workers={len(self.workers)}>")
