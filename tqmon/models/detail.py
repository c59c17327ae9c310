"""View-models for the non-table views: overview tiles, task detail, worker detail.

Everything is plain data of inert strings and tones, built from a :class:`Cluster` at a moment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tqcore import states
from tqcore.events import QueueInfo, Task, Worker
from tqmon.contracts import QueueFigures
from tqmon.models import fmt
from tqmon.models.cluster import Cluster
from tqmon.models.rows import state_counts_text, worker_status
from tqmon.models.table import Cell


# -- overview ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Tile:
    """One overview tile: a title, a big figure, detail lines; ``view`` is where enter goes."""

    key: str
    title: str
    figure: Cell
    lines: tuple[Cell, ...]
    view: str
    filter: str = ""


def overview_tiles(cluster: Cluster) -> list[Tile]:
    """The overview tiles: workers, queues, throughput, failures, flows, stream."""
    state = cluster.state
    now = cluster.now()
    statuses = [worker_status(w) for w in state.workers.values()]
    online = statuses.count("online")
    lost = statuses.count("lost")
    unknown = statuses.count("unknown")
    busy = sum(w.pool_busy or 0 for w in state.workers.values() if w.status == "online")
    size = sum(w.pool_size or 0 for w in state.workers.values() if w.status == "online")
    registry = len(cluster.registry())
    ranked = sorted(state.workers.values(),
                    key=lambda w: (_RANK.get(worker_status(w), 9), w.hostname))
    listed = tuple(_worker_line(w, now) for w in ranked[:TILE_LIST])
    workers = Tile(
        "workers", "Workers [2]",
        Cell(f"{online}/{len(statuses) or registry} online", "ok" if online and not lost else
             "err" if lost else "warn"),
        (Cell(f"busy {busy}/{size} slots · {fmt.percent(busy, size)}"),
         Cell(f"{lost} lost", "err") if lost else Cell("0 lost", "dim"),
         Cell(f"{unknown} unknown (stream down)", "warn") if unknown else
         Cell(f"{registry} in broker registry", "dim"), *listed),
        "workers", "state:lost" if lost else "")
    queues = cluster.queue_figures()
    depth = sum(q.depth for q in queues.values())
    worst = max(queues.values(), key=lambda q: q.oldest_age, default=None)
    orphan = [q.name for q in queues.values() if q.depth and q.consumers == 0]
    dead = sum(q.dead_lettered for q in queues.values())
    age = cluster.figures_age()
    deepest = sorted(queues.values(), key=lambda q: (-q.depth, q.name))[:TILE_LIST]
    rates = {q.name: q for q in state.queue_infos()}
    listed_q = tuple(_queue_line(q, rates.get(q.name)) for q in deepest)
    queue_tile = Tile(
        "queues", "Queues [3]",
        Cell(f"{fmt.count(depth)} ready", "warn" if depth else "ok"),
        (Cell(f"oldest {fmt.duration(worst.oldest_age)} in {fmt.safe(worst.name, 30)}"
              if worst is not None and worst.oldest_age else "oldest —",
              "warn" if worst is not None and worst.oldest_age > 30 else ""),
         Cell(f"⚠ no consumers: {', '.join(fmt.safe(n, 30) for n in orphan[:3])}", "err")
         if orphan else Cell("every non-empty queue has consumers", "dim"),
         Cell(f"{fmt.count(dead)} dead-lettered", "err" if dead else "dim"),
         Cell(f"figures {fmt.duration(age)} old", "warn" if cluster.stale else "dim")
         if age is not None else Cell("no broker figures yet", "dim"), *listed_q),
        "queues")
    points = state.aggregates.throughput(15)
    ok_series: list[float | None] = [float(p.succeeded) for p in points]
    err_series: list[float | None] = [float(p.failed) for p in points]
    total_ok = sum(p.succeeded for p in points)
    total_err = sum(p.failed for p in points)
    rate = state.aggregates.failure_rate(minutes=15)
    pct = state.aggregates.percentiles(minutes=15)
    throughput = Tile(
        "throughput", "Throughput · 15 min [4]",
        Cell(f"{fmt.count(total_ok)} ok · {fmt.count(total_err)} failed",
             "err" if total_err else "ok"),
        (Cell(f"ok   {fmt.spark(ok_series)}", "ok"), Cell(f"fail {fmt.spark(err_series)}", "err"),
         Cell(f"failure rate {'—' if rate is None else f'{rate * 100:.1f}%'} · "
              f"p50 {fmt.duration(pct.p50)} p95 {fmt.duration(pct.p95)}",
              "err" if rate and rate > 0.05 else "")),
        "tasks")
    top = state.signatures.top(5, by="count")
    failures = Tile(
        "failures", "Top failures [5]",
        Cell(f"{len(state.signatures)} signature{'s' if len(state.signatures) != 1 else ''}",
             "err" if top else "ok"),
        tuple(Cell(f"{sig.count:>5}× {fmt.safe(sig.exc_type, 24)}: {fmt.safe(sig.message, 60)}",
                   "err" if now - sig.last_seen < 120 else "") for sig in top)
        or (Cell("no failures", "dim"),),
        "failures")
    flows = state.workflows(200)
    running = sum(1 for f in flows if f.state in (states.STARTED, states.PENDING))
    failed = sum(1 for f in flows if f.state == states.FAILURE)
    flow_tile = Tile(
        "flows", "Workflows [6]",
        Cell(f"{state.workflow_count} runs", "err" if failed else ""),
        (Cell(f"{running} running", "run" if running else "dim"),
         Cell(f"{failed} with failures", "err" if failed else "dim")),
        "flows")
    counts = state.state_counts
    tasks_tile = Tile(
        "tasks", "Tasks [4]",
        Cell(f"{fmt.count(len(state.tasks))} stored"),
        (Cell(state_counts_text(counts, words=True) or "none yet"),
         Cell(f"{fmt.count(state.evicted)} evicted · {fmt.count(state.malformed)} malformed",
              "dim")),
        "tasks")
    lag = cluster.lag()
    stream = Tile(
        "events", "Event stream [7]",
        Cell(f"{fmt.rate(cluster.events_per_second())}".replace("/s", " ev/s"),
             "warn" if cluster.stale else "ok"),
        (Cell(f"lag {fmt.duration(lag)}", "warn" if lag and lag > 5 else ""),
         Cell(f"{fmt.count(state.event_count)} events folded", "dim"),
         Cell(f"{sum(w.seq_gaps for w in state.workers.values())} heartbeat gaps", "dim")),
        "events")
    return [workers, queue_tile, throughput, failures, tasks_tile, flow_tile, stream]


#: Workers and queues listed in their overview tiles.
TILE_LIST = 4
_RANK = {"lost": 0, "unknown": 1, "offline": 2, "online": 3}
_MARK = {"online": "●", "lost": "✗", "offline": "○", "unknown": "?"}


def _worker_line(worker: Worker, now: float) -> Cell:
    status = worker_status(worker)
    tone = {"online": "", "lost": "err", "unknown": "warn"}.get(status, "dim")
    busy = f"{worker.pool_busy}/{worker.pool_size} busy" if worker.pool_size else ""
    since = f"hb {fmt.age(worker.last_heartbeat, now)}" if worker.last_heartbeat else ""
    return Cell(f"{_MARK.get(status, ' ')} {fmt.safe(worker.hostname, 30):<18} {status:<8} "
                f"{busy or since}", tone)


def _queue_line(queue: QueueFigures, info: QueueInfo | None) -> Cell:
    eta, tone = fmt.drain_eta(queue.depth, info.in_rate if info else 0.0,
                              info.out_rate if info else 0.0)
    if queue.consumers == 0 and queue.depth:
        eta, tone = "no consumers", "err"
    return Cell(f"{fmt.safe(queue.name, 20):<12} {queue.depth:>7,} "
                f"{fmt.duration(queue.oldest_age) if queue.oldest_age else '—':>6}  {eta}",
                tone if tone in ("err", "warn") else "")


# -- task detail ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Step:
    """One point of a task's timeline, with the gap since the previous one."""

    label: str
    at: float
    gap: float | None
    tone: str


@dataclass(frozen=True, slots=True)
class Link:
    """A place to drill to from a task: ``kind`` is task, worker, flow or signature."""

    kind: str
    target: str
    label: str


@dataclass(frozen=True, slots=True)
class TaskDetail:
    """Everything the task detail view shows (inert strings)."""

    id: str
    name: str
    state: str
    glyph: str
    tone: str
    facts: tuple[tuple[str, Cell], ...]
    timeline: tuple[Step, ...]
    sections: tuple[tuple[str, str], ...]
    links: tuple[Link, ...] = field(default_factory=tuple)


_STEPS = (("sent", "sent", "dim"), ("received", "received", "info"),
          ("started", "started", "run"), ("retried", "retried", "warn"),
          ("succeeded", "succeeded", "ok"), ("failed", "failed", "err"),
          ("revoked", "revoked", "warn"), ("rejected", "rejected", "warn"))


def task_detail(cluster: Cluster, task: Task) -> TaskDetail:
    """The detail of ``task`` as of now."""
    now = cluster.now()
    points = sorted(((getattr(task, attr), label, tone) for attr, label, tone in _STEPS
                     if getattr(task, attr) is not None), key=lambda p: p[0])
    timeline = []
    prev: float | None = None
    for at, label, tone in points:
        timeline.append(Step(label, at, None if prev is None else at - prev, tone))
        prev = at
    runtime = task.runtime
    if runtime is None and task.state == states.STARTED and task.started is not None:
        runtime = now - task.started
    facts = (
        ("state", Cell(f"{fmt.glyph(task.state)} {fmt.safe(task.state, 20)}",
                       fmt.state_tone(task.state))),
        ("worker", Cell(fmt.safe(task.worker or "—", 80))),
        ("queue", Cell(fmt.safe(task.queue or "—", 80))),
        ("runtime", Cell(fmt.duration(runtime))),
        ("retries", Cell(str(task.retries or 0), "warn" if task.retries else "")),
        ("updated", Cell(f"{fmt.clock_time(task.timestamp)} ({fmt.age(task.timestamp, now)} ago)")),
        ("eta", Cell(fmt.safe(task.eta or "—", 60))),
        ("signature", Cell(task.signature or "—", "err" if task.signature else "dim")),
    )
    sections = [("args", fmt.safe_block(task.args if task.args is not None else "—", 4000)),
                ("kwargs", fmt.safe_block(task.kwargs if task.kwargs is not None else "—", 4000))]
    if task.result is not None:
        sections.append(("result", fmt.safe_block(task.result, 4000)))
    if task.exception or task.exc_type:
        sections.append(("exception", fmt.safe_block(
            f"{task.exc_type or ''}: {task.exc_message or ''}".strip(": ")
            if task.exc_type else task.exception, 4000)))
    if task.traceback:
        sections.append(("traceback", fmt.safe_block(task.traceback)))
    if task.info:
        sections.append(("info", fmt.safe_block(task.info, 4000)))
    links: list[Link] = []
    if task.parent_id:
        links.append(Link("task", task.parent_id, f"parent   {_task_label(cluster, task.parent_id)}"))
    if task.root_id and task.root_id != task.uuid:
        links.append(Link("task", task.root_id, f"root     {_task_label(cluster, task.root_id)}"))
    for child in cluster.state.children(task.uuid)[:20]:
        links.append(Link("task", child, f"child    {_task_label(cluster, child)}"))
    flow = _flow_of(cluster, task)
    if flow is not None:
        links.append(Link("flow", flow, f"workflow {fmt.short_id(flow)}"))
    if task.worker:
        links.append(Link("worker", task.worker, f"worker   {fmt.safe(task.worker, 80)}"))
    if task.signature:
        links.append(Link("signature", task.signature, f"failures with signature {task.signature}"))
    return TaskDetail(
        id=fmt.safe(task.uuid, 80), name=fmt.safe(task.name or "?", 200),
        state=fmt.safe(task.state, 20), glyph=fmt.glyph(task.state),
        tone=fmt.state_tone(task.state), facts=facts, timeline=tuple(timeline),
        sections=tuple(sections), links=tuple(links))


def _task_label(cluster: Cluster, task_id: str) -> str:
    other = cluster.state.tasks.get(task_id)
    name = fmt.safe(other.name, 80) if other is not None and other.name else "(not stored)"
    glyph = fmt.glyph(other.state) if other is not None else "?"
    return f"{glyph} {fmt.short_id(task_id)} {name}"


def _flow_of(cluster: Cluster, task: Task) -> str | None:
    """The workflow key ``task`` belongs to (its root, or its group for a bare group/chord)."""
    for key in (task.root_id, task.group, task.uuid):
        if key and cluster.state.workflow(key) is not None:
            return key
    return None


# -- worker detail ----------------------------------------------------------------------------
def worker_facts(cluster: Cluster, host: str) -> tuple[tuple[str, Cell], ...]:
    """Key figures of one worker (from events, else from the registry)."""
    worker = cluster.state.workers.get(host)
    now = cluster.now()
    if worker is None:
        info = cluster.registry().get(host, {})
        return (("state", Cell("◌ registered (no events yet)", "info")),
                ("queues", Cell(", ".join(fmt.safe(q, 40) for q in info.get("queues") or []))),
                ("pool", Cell(fmt.safe(info.get("pool", "—"), 20))))
    status = worker_status(worker)
    tone = {"online": "ok", "lost": "err", "unknown": "warn"}.get(status, "dim")
    return (
        ("state", Cell(status, tone)),
        ("heartbeat", Cell(f"{fmt.age(worker.last_heartbeat, now)} ago · every "
                           f"{fmt.duration(worker.freq or 2.0)} · {worker.seq_gaps} missed")),
        ("online since", Cell(fmt.clock_time(worker.online_at))),
        ("pool", Cell(f"{worker.pool_busy if worker.pool_busy is not None else '?'} busy of "
                      f"{worker.pool_size if worker.pool_size is not None else '?'}")),
        ("load", Cell(" ".join(f"{v:.2f}" for v in worker.loadavg) or "—")),
        ("cpu / rss", Cell(f"{'—' if worker.cpu is None else f'{worker.cpu:.0f}%'} / "
                           f"{fmt.bytes_(worker.rss)}")),
        ("tasks", Cell(f"{worker.tasks_active} active · {worker.tasks_succeeded} ok · "
                       f"{worker.tasks_failed} failed · {worker.tasks_retried} retried")),
        ("queues", Cell(", ".join(fmt.safe(q, 40) for q in worker.queues) or "—")),
        ("software", Cell(fmt.safe(f"{worker.sw_ident or '?'} {worker.sw_ver or ''} "
                                   f"{worker.sw_sys or ''}", 80))),
        ("clock drift", Cell("—" if worker.drift is None else f"{worker.drift:+.3f}s")),
    )
