"""Row view-models for the table views: workers, queues, tasks, failures, flows, events.

Each view has a ``*_COLUMNS`` tuple and a builder returning :class:`~tqmon.models.table.RowVM`.
Every untrusted string is made inert here (:func:`~tqmon.models.fmt.safe`) before it reaches a
widget. Task rows are built lazily, only for the rows on screen (see :class:`TaskFields`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from tqcore import states
from tqcore.events import SignatureInfo, Task, Worker, WorkflowSummary
from tqmon.contracts import QueueFigures
from tqmon.models import fmt
from tqmon.models.cluster import Cluster, TailEvent
from tqmon.models.table import Cell, Column, RowVM

# -- workers ----------------------------------------------------------------------------------
WORKER_COLUMNS = (
    Column("host", "WORKER", 18, flex=True), Column("state", "STATE", 12),
    Column("heartbeat", "HEARTBEAT", 9, "right"), Column("load", "LOAD", 14),
    Column("pool", "POOL", 7, "right"), Column("active", "ACTIVE", 6, "right"),
    Column("processed", "DONE", 6, "right"), Column("failed", "FAILED", 6, "right"),
    Column("retried", "RETRY", 5, "right"), Column("queues", "QUEUES", 18),
    Column("version", "VERSION", 8), Column("cpu", "CPU", 5, "right"),
    Column("rss", "RSS", 6, "right"),
)
#: Status sort order: problems first.
_STATUS_ORDER = {"lost": 0, "offline": 1, "unknown": 2, "registered": 3, "online": 4}


def worker_status(worker: Worker) -> str:
    """``online``, ``unknown`` (stream down), ``offline`` (said goodbye) or ``lost`` (silent)."""
    status = worker.status
    if status == "offline" and not worker.offline:
        return "lost"
    return status


def _status_cell(status: str, since: str) -> Cell:
    tone = {"online": "ok", "lost": "err", "offline": "dim", "unknown": "warn",
            "registered": "info"}.get(status, "")
    mark = {"online": "●", "lost": "✗", "offline": "○", "unknown": "?", "registered": "◌"}
    text = f"{mark.get(status, ' ')} {status}" + (f" {since}" if since and status == "lost" else "")
    return Cell(text, tone)


def worker_rows(cluster: Cluster) -> list[RowVM]:
    """One row per worker known by events or by the broker's registry."""
    now = cluster.now()
    stale = cluster.stale
    rows = []
    registry = cluster.registry()
    for host, worker in cluster.state.workers.items():
        status = worker_status(worker)
        hb_age = worker.heartbeat_age
        busy, size = worker.pool_busy, worker.pool_size
        load = " ".join(f"{v:.2f}" for v in worker.loadavg[:3]) if worker.loadavg else "—"
        queues = ",".join(fmt.safe(q, 40) for q in worker.queues) or ",".join(
            fmt.safe(q, 40) for q in (registry.get(host, {}).get("queues") or []))
        since = fmt.age(worker.last_heartbeat or worker.last_seen or None, now)
        failed = worker.tasks_failed
        cells = (
            Cell(fmt.safe(host, 80), "accent"),
            _status_cell(status, since),
            Cell(fmt.duration(hb_age) if hb_age is not None else "—",
                 "warn" if hb_age is not None and hb_age > 2.5 * (worker.freq or 2.0) else ""),
            Cell(load),
            Cell(f"{busy if busy is not None else '?'}/{size if size is not None else '?'}",
                 "warn" if busy is not None and size and busy >= size else ""),
            Cell(fmt.count(worker.tasks_active)),
            Cell(fmt.count(worker.processed if worker.processed is not None
                           else worker.tasks_processed)),
            Cell(fmt.count(failed), "err" if failed else ""),
            Cell(fmt.count(worker.tasks_retried), "warn" if worker.tasks_retried else ""),
            Cell(queues),
            Cell(fmt.safe(worker.sw_ver or "—", 20)),
            Cell("—" if worker.cpu is None else f"{worker.cpu:.0f}%"),
            Cell(fmt.bytes_(worker.rss)),
        )
        sort: tuple[Any, ...] = (host, _STATUS_ORDER.get(status, 9), hb_age, worker.loadavg[:1] or None,
                busy, worker.tasks_active, worker.processed, failed, worker.tasks_retried,
                queues, worker.sw_ver, worker.cpu, worker.rss)
        fields = {"host": host, "worker": host, "name": host, "state": status,
                  "status": status, "queue": queues, "queues": queues, "version": worker.sw_ver,
                  "active": worker.tasks_active, "failed": failed,
                  "age": hb_age, "heartbeat": hb_age}
        rows.append(RowVM(host, cells, sort, fields, "stale" if stale else ""))
    for host, info in registry.items():
        if host in cluster.state.workers:
            continue
        queues = ",".join(fmt.safe(q, 40) for q in info.get("queues") or [])
        cells = (Cell(fmt.safe(host, 80), "accent"), _status_cell("registered", ""),
                 Cell("—"), Cell("—"), Cell(f"?/{fmt.safe(info.get('concurrency', '?'), 6)}"),
                 Cell("—"), Cell("—"), Cell("—"), Cell("—"), Cell(queues), Cell("—"), Cell("—"),
                 Cell("—"))
        sort = (host, _STATUS_ORDER["registered"], *(None,) * 11)
        fields = {"host": host, "worker": host, "name": host, "state": "registered",
                  "queue": queues}
        rows.append(RowVM(host, cells, sort, fields, "stale" if stale else ""))
    return rows


# -- queues -----------------------------------------------------------------------------------
QUEUE_COLUMNS = (
    Column("name", "QUEUE", 14, flex=True), Column("depth", "READY", 9, "right"),
    Column("in_flight", "UNACKED", 8, "right"), Column("scheduled", "SCHED", 5, "right"),
    Column("consumers", "CONSUMERS", 11, "right"), Column("oldest", "OLDEST", 8, "right"),
    Column("in", "IN", 8, "right"), Column("out", "OUT", 8, "right"),
    Column("eta", "DRAIN", 16), Column("dead", "DLQ", 5, "right"),
    Column("trend", "DEPTH TREND", 24),
)


def queue_rows(cluster: Cluster) -> list[RowVM]:
    """One row per queue known by the broker's figures or by events."""
    now = cluster.now()
    stale = cluster.stale
    figures = cluster.queue_figures()
    infos = {q.name: q for q in cluster.state.queue_infos()}
    age = cluster.figures_age()
    suffix = f" ·{fmt.duration(age)}" if stale and age is not None else ""
    rows = []
    for name in sorted(set(figures) | set(infos)):
        fig: QueueFigures | None = figures.get(name)
        info = infos.get(name)
        in_rate = info.in_rate if info else 0.0
        out_rate = info.out_rate if info else 0.0
        depth = fig.depth if fig else (info.waiting if info else 0)
        consumers = fig.consumers if fig else None
        eta, eta_tone = fmt.drain_eta(depth, in_rate, out_rate)
        if consumers == 0 and depth:
            eta, eta_tone = "no consumers", "err"
            consumer_cell = Cell("0 ⚠ none", "err")
        else:
            consumer_cell = Cell(fmt.count(consumers) if consumers is not None else "?")
        oldest = fig.oldest_age if fig else None
        dead = fig.dead_lettered if fig else 0
        history = cluster.depth_history(name)
        cells = (
            Cell(fmt.safe(name, 80), "accent"),
            Cell(fmt.count(depth) + suffix, "warn" if depth else ""),
            Cell(fmt.count(fig.in_flight) if fig else "—"),
            Cell(fmt.count(fig.scheduled) if fig else "—"),
            consumer_cell,
            Cell(fmt.duration(oldest) if oldest else "—",
                 "err" if oldest and oldest > 300 else "warn" if oldest and oldest > 30 else ""),
            Cell(fmt.rate(in_rate)), Cell(fmt.rate(out_rate)),
            Cell(eta, eta_tone),
            Cell(fmt.count(dead), "err" if dead else ""),
            Cell(fmt.spark(history, 24), "info"),
        )
        sort = (name, depth, fig.in_flight if fig else None, fig.scheduled if fig else None,
                consumers, oldest, in_rate, out_rate, (depth or 0) - (out_rate - in_rate),
                dead, depth)
        fields = {"name": name, "queue": name, "depth": depth, "age": oldest,
                  "oldest": oldest, "consumers": consumers, "dead": dead,
                  "state": "noconsumer" if consumers == 0 and depth else "ok",
                  "timestamp": now - oldest if oldest else None}
        rows.append(RowVM(name, cells, sort, fields, "stale" if stale else ""))
    return rows


# -- tasks ------------------------------------------------------------------------------------
TASK_COLUMNS = (
    Column("id", "ID", 10), Column("name", "NAME", 20, flex=True),
    Column("state", "STATE", 10), Column("worker", "WORKER", 14), Column("queue", "QUEUE", 10),
    Column("received", "RECEIVED", 8), Column("age", "AGE", 7, "right"),
    Column("runtime", "RUNTIME", 8, "right"), Column("retries", "RETRY", 5, "right"),
    Column("root", "ROOT", 10), Column("error", "ERROR", 26, flex=True),
)
#: Sort value per task column (by Task attribute); AGE sorts by the last change.
TASK_SORT = ("uuid", "name", "rank", "worker", "queue", "received", "timestamp", "runtime",
             "retries", "root_id", "exc_type")


def task_sort_key(column: int) -> Any:
    """A sort key function over :class:`Task` for the ``column``-th task column."""
    attr = TASK_SORT[column] if column < len(TASK_SORT) else "timestamp"
    if attr == "timestamp":
        return lambda t: t.timestamp or 0.0
    if attr == "rank":
        return lambda t: (-t.rank, t.timestamp or 0.0)

    def key(task: Task) -> tuple[int, Any]:
        value = getattr(task, attr)
        if value is None:
            return (1, "")
        return (0, value) if isinstance(value, int | float) else (0, str(value).lower())
    return key


def error_summary(task: Task) -> str:
    """``Type: message`` for a failed or retried task, inert and short."""
    if task.exc_type or task.exc_message:
        return fmt.safe(f"{task.exc_type or 'Error'}: {task.exc_message or ''}", 160)
    return fmt.safe(task.exception or "", 160)


class TaskFields(Mapping[str, Any]):
    """A task seen through the filter's field names, computed on access (no dict per row)."""

    __slots__ = ("_task", "_now")
    KEYS = ("id", "uuid", "name", "state", "worker", "queue", "args", "kwargs", "result", "exc",
            "exc_type", "exception", "sig", "signature", "root", "root_id", "parent", "group",
            "retries", "runtime", "age", "timestamp", "sent", "received", "started")

    def __init__(self, task: Task, now: float) -> None:
        self._task = task
        self._now = now

    def __getitem__(self, key: str) -> Any:
        t = self._task
        if key in ("id", "uuid"):
            return t.uuid
        if key == "exc":
            return " ".join(x for x in (t.exc_type, t.exc_message or t.exception) if x) or None
        if key == "exception":
            return t.exception or t.exc_message
        if key in ("sig", "signature"):
            return t.signature
        if key in ("root", "root_id"):
            return t.root_id
        if key == "parent":
            return t.parent_id
        if key == "age":
            return None if t.timestamp is None else self._now - t.timestamp
        if key in ("args", "kwargs", "result"):
            value = getattr(t, key)
            return None if value is None else str(value)
        if key in ("name", "state", "worker", "queue", "group", "retries", "runtime",
                   "timestamp", "exc_type", "sent", "received", "started"):
            return getattr(t, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.KEYS)

    def __len__(self) -> int:
        return len(self.KEYS)


def task_row(task: Task, now: float, stale: bool = False) -> RowVM:
    """The row of one task."""
    tone = fmt.state_tone(task.state)
    runtime = task.runtime
    if runtime is None and task.state == states.STARTED and task.started is not None:
        runtime = now - task.started
    cells = (
        Cell(fmt.short_id(task.uuid), "dim"),
        Cell(fmt.safe(task.name or "?", 120)),
        Cell(f"{fmt.glyph(task.state)} {fmt.safe(task.state, 20)}", tone),
        Cell(fmt.safe(task.worker or "—", 60)),
        Cell(fmt.safe(task.queue or "—", 40)),
        Cell(fmt.clock_time(task.received or task.sent)),
        Cell(fmt.age(task.timestamp, now)),
        Cell(fmt.duration(runtime), "run" if task.runtime is None and runtime else ""),
        Cell(str(task.retries) if task.retries else "", "warn" if task.retries else ""),
        Cell(fmt.short_id(task.root_id) if task.root_id and task.root_id != task.uuid else "",
             "dim"),
        Cell(error_summary(task), "err" if task.state == states.FAILURE else "warn"),
    )
    return RowVM(task.uuid, cells, (), TaskFields(task, now), "stale" if stale else "")


# -- failures ---------------------------------------------------------------------------------
FAILURE_COLUMNS = (
    Column("sig", "SIGNATURE", 12), Column("count", "COUNT", 7, "right"),
    Column("type", "EXCEPTION", 16), Column("message", "MESSAGE", 30, flex=True),
    Column("frame", "WHERE", 20), Column("tasks", "TASKS", 16),
    Column("workers", "HOSTS", 5, "right"), Column("first", "FIRST", 6, "right"),
    Column("last", "LAST", 6, "right"), Column("trend", "PER MINUTE", 15),
)


def _top(counter: Mapping[str, int]) -> str:
    ranked = sorted(counter.items(), key=lambda kv: -kv[1])
    text = ",".join(fmt.safe(name, 40) for name, _ in ranked[:2])
    return text + (f" +{len(ranked) - 2}" if len(ranked) > 2 else "")


def failure_rows(cluster: Cluster) -> list[RowVM]:
    """One row per failure signature."""
    now = cluster.now()
    sigs: tuple[SignatureInfo, ...] = cluster.state.signatures.top(
        len(cluster.state.signatures), by="count")
    rows = []
    for sig in sigs:
        minute_now = int(now // 60)
        per = dict((int(m // 60), n) for m, n in sig.per_minute)
        series: list[float | None] = [float(per.get(m, 0)) for m in range(minute_now - 14,
                                                                         minute_now + 1)]
        recent = now - sig.last_seen < 60
        cells = (
            Cell(sig.id, "dim"),
            Cell(fmt.count(sig.count), "err"),
            Cell(fmt.safe(sig.exc_type or "?", 60), "err"),
            Cell(fmt.safe(sig.message, 300)),
            Cell(fmt.safe(sig.frame or "—", 80), "dim"),
            Cell(_top(sig.task_names)),
            Cell(str(len(sig.workers))),
            Cell(fmt.age(sig.first_seen, now)),
            Cell(fmt.age(sig.last_seen, now), "warn" if recent else ""),
            Cell(fmt.spark(series, 15), "err"),
        )
        sort = (sig.id, sig.count, sig.exc_type, sig.message, sig.frame, _top(sig.task_names),
                len(sig.workers), sig.first_seen, sig.last_seen, sig.count)
        fields = {"sig": sig.id, "id": sig.id, "exc": f"{sig.exc_type} {sig.message}",
                  "name": " ".join(sig.task_names), "worker": " ".join(sig.workers),
                  "count": sig.count, "age": now - sig.last_seen, "timestamp": sig.last_seen,
                  "state": "FAILURE"}
        rows.append(RowVM(sig.id, cells, sort, fields))
    return rows


# -- flows ------------------------------------------------------------------------------------
FLOW_COLUMNS = (
    Column("root", "ROOT", 10), Column("name", "WORKFLOW", 22, flex=True),
    Column("state", "STATE", 10), Column("progress", "PROGRESS", 18),
    Column("failed", "FAILED", 6, "right"), Column("counts", "STATES", 22),
    Column("duration", "DURATION", 8, "right"), Column("last", "ACTIVE", 7, "right"),
)


def state_counts_text(counts: Mapping[str, int], words: bool = False) -> str:
    """``37✓ 2⟳ 1✗ 1…`` from a state → count mapping (``37 success · 2 retry …`` with
    ``words``)."""
    order = (states.SUCCESS, states.FAILURE, states.RETRY, states.STARTED, states.RECEIVED,
             states.PENDING, states.REVOKED, states.REJECTED)
    ranked = [s for s in order if counts.get(s)] + [s for s, n in counts.items()
                                                   if s not in order and n]
    if words:
        return " · ".join(f"{counts[s]} {fmt.safe(s, 20).lower()}" for s in ranked)
    return " ".join(f"{counts[s]}{fmt.glyph(s)}" for s in ranked)


def flow_rows(cluster: Cluster, limit: int | None = 5_000) -> list[RowVM]:
    """One row per workflow run, most recently active first."""
    now = cluster.now()
    rows = []
    flows: tuple[WorkflowSummary, ...] = cluster.state.workflows(limit)
    for wf in flows:
        tone = fmt.state_tone(wf.state)
        cells = (
            Cell(fmt.short_id(wf.root_id), "dim"),
            Cell(fmt.safe(wf.name or "?", 120)),
            Cell(f"{fmt.glyph(wf.state)} {wf.state}", tone),
            Cell(f"{fmt.progress_bar(wf.done, wf.total, 8)} {wf.done}/{wf.total}", tone),
            Cell(fmt.count(wf.failed), "err" if wf.failed else ""),
            Cell(state_counts_text(wf.counts)),
            Cell(fmt.duration(wf.duration)),
            Cell(fmt.age(wf.last_activity, now)),
        )
        sort = (wf.root_id, wf.name, wf.state, wf.done / wf.total if wf.total else 0.0,
                wf.failed, wf.total, wf.duration, wf.last_activity)
        fields = {"root": wf.root_id, "id": wf.root_id, "name": wf.name, "state": wf.state,
                  "failed": wf.failed, "total": wf.total, "runtime": wf.duration,
                  "age": None if wf.last_activity is None else now - wf.last_activity,
                  "timestamp": wf.last_activity}
        rows.append(RowVM(wf.root_id, cells, sort, fields))
    return rows


# -- events -----------------------------------------------------------------------------------
EVENT_COLUMNS = (
    Column("time", "TIME", 12), Column("type", "TYPE", 17), Column("host", "HOST", 16),
    Column("uuid", "TASK", 10), Column("name", "NAME", 18),
    Column("detail", "DETAIL", 30, flex=True),
)
_DETAIL_KEYS = ("exc_type", "exc_message", "result", "runtime", "args", "active", "pool_busy",
                "queue", "routing_key")


def event_row(item: TailEvent) -> RowVM:
    """The row of one raw event."""
    ev = item.event
    kind = str(ev.get("type", "?"))
    ts = ev.get("timestamp")
    ts = ts if isinstance(ts, int | float) else item.received_at
    tone = {"task-failed": "err", "task-retried": "warn", "task-succeeded": "ok",
            "task-revoked": "warn", "task-started": "run", "worker-offline": "err",
            "worker-online": "ok", "worker-heartbeat": "dim"}.get(kind, "")
    details = []
    for key in _DETAIL_KEYS:
        value = ev.get(key)
        if value is not None and value != "":
            if key == "runtime" and isinstance(value, int | float):
                value = fmt.duration(value)
            details.append(f"{key}={fmt.safe(value, 80)}")
    frac = f"{ts % 1:.3f}"[1:]
    cells = (
        Cell(fmt.clock_time(ts) + frac, "dim"),
        Cell(fmt.safe(kind, 40), tone),
        Cell(fmt.safe(ev.get("hostname") or "—", 60)),
        Cell(fmt.short_id(ev.get("uuid")) if ev.get("uuid") else "", "dim"),
        Cell(fmt.safe(ev.get("name") or "", 120)),
        Cell(" ".join(details)),
    )
    fields = {"type": kind, "state": kind, "host": ev.get("hostname"), "worker": ev.get("hostname"),
              "id": ev.get("uuid"), "uuid": ev.get("uuid"), "name": ev.get("name") or kind,
              "timestamp": ts, "detail": " ".join(details), "args": " ".join(details),
              "exc_type": ev.get("exc_type"), "queue": ev.get("queue")}
    return RowVM(str(item.seq), cells, (item.seq, kind, ev.get("hostname"), ev.get("uuid"),
                                        ev.get("name"), None), fields)
