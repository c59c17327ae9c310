"""How fast tqmon ingests a big cluster's event stream (tqmon-ux.md §3.9: budget 5k events/s).

Run from the repository root::

    python -m bench.tqmon_ingest                         # 100k tasks, 200 workers
    python -m bench.tqmon_ingest --tasks 20000 --seconds 5 --rate 5000
    python -m bench.tqmon_ingest --no-ui                 # skip the keypress latency part

The stream is synthetic but shaped like a busy cluster: 200 workers heartbeating every 2 s,
100,000 tasks at 1,000/s over 12 task types and 4 queues, each ``sent → received → started →
succeeded`` (5 % ``failed`` across 4 exception signatures, 2 % retried once first), one
submission in ten a workflow (a parent, a group of 8, a chord body). Events are serialised the
way they travel: ``task.multi`` JSON lists of up to 24 events per sending node, heartbeats
alone.

It measures the path tqmon runs, in the same two places:

1. **source thread**: ``ClusterSource._decode`` (guarded JSON decode, flattening, sanity
   checks, duplicate fingerprints, ``local_received``) and coalescing into
   :class:`~tqmon.contracts.EventBatch` items of at most 5,000 events;
2. **UI thread**: folding each batch into the UI model (``tqmon.models.cluster.Cluster`` when
   the UI is installed, else a bare :class:`tqcore.events.State`).

Phases: unpaced throughput of each side and of both; a *paced* run (two threads, as in the app,
bodies arriving on schedule at ``--rate`` events/s, batches posted every 150 ms) reporting the
achieved rate, the UI thread's busy share and the arrival-to-folded lag; the ``/`` filter over
every task row; and, when :mod:`tqmon.app` exists, keypress-to-screen latency with Textual's
``run_test`` and ``pilot.press`` on the fully loaded cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import queue
import random
import resource
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from tqcore import codec
from tqcore.events import State
from tqmon.cli import tune_gc
from tqmon.contracts import BrokerFigures, EventBatch, LinkStatus, QueueFigures
from tqmon.query import parse
from tqmon.source import ClusterSource

TASK_TYPES = [f"shop.tasks.{n}" for n in (
    "send_email", "charge_card", "resize_image", "sync_account", "render_pdf", "index_doc",
    "notify", "import_csv", "compute_score", "refresh_cache", "archive", "webhook")]
QUEUES = ["default", "emails", "billing", "media"]
FAILURES = [
    ("CardDeclined", "card {id} declined for order {n}", "billing.py", "charge"),
    ("TimeoutError", "timed out after {n} seconds talking to 10.0.{n}.{n}", "http.py", "request"),
    ("KeyError", "'user_{n}'", "accounts.py", "load_user"),
    ("OperationalError", "could not obtain a connection within {n}s", "db.py", "connect"),
]
BATCH_INTERVAL = 0.15
MAX_BATCH = 5_000


# -- the synthetic stream ----------------------------------------------------------------------
def generate(n_tasks: int, n_workers: int, rate: float = 1000.0, seed: int = 7
             ) -> tuple[list[tuple[float, bytes]], int, float]:
    """``([(arrival time, body bytes)], event count, span in seconds)``, in arrival order."""
    rng = random.Random(seed)
    hosts = [f"worker{i}@host{i // 8}" for i in range(n_workers)]
    pid = {h: 1000 + i for i, h in enumerate(hosts)}
    clocks: dict[str, int] = {}
    events: list[tuple[float, int, dict[str, Any]]] = []
    order = 0

    def emit(host: str, ts: float, type_: str, **fields: Any) -> None:
        nonlocal order
        clocks[host] = clocks.get(host, 0) + 1
        order += 1
        events.append((ts, order, {"hostname": host, "utcoffset": 0, "pid": pid.get(host, 77),
                                   "clock": clocks[host], "timestamp": ts, "type": type_,
                                   **fields}))

    start, t, made = 1_800_000_000.0, 1_800_000_000.0, 0
    while made < n_tasks:
        flow = rng.random() < 0.10
        root = str(uuid.UUID(int=rng.getrandbits(128)))
        members = [root]
        group = body = None
        if flow:
            group = str(uuid.UUID(int=rng.getrandbits(128)))
            body = str(uuid.UUID(int=rng.getrandbits(128)))
            members += [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(8)] + [body]
        for k, tid in enumerate(members):
            t += rng.expovariate(rate)
            made += 1
            name = rng.choice(TASK_TYPES)
            queue_name = QUEUES[TASK_TYPES.index(name) % len(QUEUES)]
            host = rng.choice(hosts)
            head: dict[str, Any] = {
                "uuid": tid, "name": name, "args": f"({rng.randrange(10**6)}, 'x')",
                "kwargs": "{'force': False}", "retries": 0, "eta": None, "expires": None,
                "root_id": root, "parent_id": root if k else None, "queue": queue_name}
            if flow and 0 < k < len(members) - 1:
                head.update(group=group, group_index=k - 1, chord=body)
            emit("producer@api-1", t, "task-sent", **head)
            received = t + rng.uniform(0.001, 0.05)
            emit(host, received, "task-received", **head)
            started = received + rng.uniform(0.0005, 0.01)
            emit(host, started, "task-started", uuid=tid)
            done = started + rng.lognormvariate(-3.0, 1.0)
            roll = rng.random()
            if roll < 0.02:
                emit(host, done, "task-retried", uuid=tid, exception="ConnectionError('reset')",
                     traceback="Traceback ...\nConnectionError: reset\n")
                done += 1.0
            if roll > 0.95:
                exc, msg, file, func = rng.choice(FAILURES)
                text = msg.format(id=uuid.UUID(int=rng.getrandbits(128)), n=rng.randrange(999))
                emit(host, done, "task-failed", uuid=tid, exception=f"{exc}({text!r})",
                     exc_type=exc, exc_message=text, runtime=done - started,
                     traceback=f'Traceback (most recent call last):\n  File "/app/{file}", line '
                               f'{rng.randrange(9, 400)}, in {func}\n{exc}: {text}\n')
            else:
                emit(host, done, "task-succeeded", uuid=tid, result="'ok'", runtime=done - started)
    for i, host in enumerate(hosts):  # heartbeats every 2 s, staggered
        beat = start + (i % 20) * 0.1
        while beat < t:
            emit(host, beat, "worker-heartbeat", freq=2.0, active=rng.randrange(4),
                 processed=int(beat - start), loadavg=[0.5, 0.4, 0.3], sw_ident="tqcore",
                 sw_ver="0.1.0", sw_sys="Linux", pool={"busy": 1, "size": 4})
            beat += 2.0
    events.sort(key=lambda e: (e[0], e[1]))
    bodies: list[tuple[float, bytes]] = []
    buffers: dict[str, list[dict[str, Any]]] = {}
    for ts, _, ev in events:
        if ev["type"].startswith("worker-"):
            bodies.append((ts, codec.dumps(ev).encode()))
            continue
        buf = buffers.setdefault(ev["hostname"], [])
        buf.append(ev)
        if len(buf) >= 24:
            bodies.append((ts, codec.dumps(buf).encode()))
            buffers[ev["hostname"]] = []
    for buf in buffers.values():
        if buf:
            bodies.append((buf[-1]["timestamp"], codec.dumps(buf).encode()))
    bodies.sort(key=lambda b: b[0])
    return bodies, len(events), t - start


def make_model() -> tuple[Callable[[EventBatch], None], Any, str]:
    """``(fold, model, label)``: the UI's ``Cluster`` when importable, else a bare State."""
    try:
        from tqmon.models.cluster import Cluster
    except ImportError:
        state = State()
        return (lambda batch: state.events(batch.events)), state, "tqcore.events.State"
    cluster = Cluster(time.time)
    return cluster.fold, cluster, "tqmon.models.cluster.Cluster"


def decode_all(bodies: list[tuple[float, bytes]]) -> list[EventBatch]:
    """The source side, unpaced: decode every body and cut batches of MAX_BATCH events."""
    source = ClusterSource("sqlite:////nonexistent/bench.db")
    pending: list[dict[str, Any]] = []
    batches: list[EventBatch] = []
    for _, raw in bodies:
        source._decode(raw, time.time(), pending)
        if len(pending) >= MAX_BATCH:
            batches.append(EventBatch(tuple(pending), time.time()))
            pending = []
    if pending:
        batches.append(EventBatch(tuple(pending), time.time()))
    return batches


# -- phases -----------------------------------------------------------------------------------
def unpaced(bodies: list[tuple[float, bytes]], n_events: int) -> tuple[Any, list[EventBatch]]:
    gc.collect()
    t0 = time.perf_counter()
    batches = decode_all(bodies)
    t1 = time.perf_counter()
    fold, model, label = make_model()
    for batch in batches:
        fold(batch)
    t2 = time.perf_counter()
    dec, fol = t1 - t0, t2 - t1
    print(f"unpaced   source decode  {n_events / dec:>10,.0f} events/s  ({dec:.2f} s)")
    print(f"          UI fold        {n_events / fol:>10,.0f} events/s  ({fol:.2f} s, {label})")
    print(f"          both, 1 core   {n_events / (dec + fol):>10,.0f} events/s")
    return model, batches


def paced(bodies: list[tuple[float, bytes]], rate: float, seconds: float, natural: float) -> None:
    """Two threads as in the app: bodies arrive on schedule, batches every 150 ms."""
    speed = rate / natural
    first = bodies[0][0]
    selected = [(ts, raw) for ts, raw in bodies if (ts - first) / speed <= seconds]
    fold, _, _ = make_model()
    source = ClusterSource("sqlite:////nonexistent/bench.db")
    q: queue.Queue[tuple[float, EventBatch] | None] = queue.Queue()
    busy = [0.0]
    lags: list[float] = []
    folded = [0]

    def ui() -> None:
        while (item := q.get()) is not None:
            oldest_arrival, batch = item
            t0 = time.perf_counter()
            fold(batch)
            t1 = time.perf_counter()
            busy[0] += t1 - t0
            folded[0] += len(batch.events)
            lags.append(t1 - oldest_arrival)

    ui_thread = threading.Thread(target=ui)
    ui_thread.start()
    start = time.perf_counter()
    pending: list[dict[str, Any]] = []
    oldest = None
    next_flush = start + BATCH_INTERVAL
    for ts, raw in selected:
        due = start + (ts - first) / speed
        while (now := time.perf_counter()) < due:
            if pending and now >= next_flush:
                assert oldest is not None
                q.put((oldest, EventBatch(tuple(pending), time.time())))
                pending, oldest, next_flush = [], None, now + BATCH_INTERVAL
            time.sleep(min(due - now, 0.005))
        if oldest is None:
            oldest = due
        source._decode(raw, time.time(), pending)
        if len(pending) >= MAX_BATCH or time.perf_counter() >= next_flush:
            q.put((oldest, EventBatch(tuple(pending), time.time())))
            pending, oldest = [], None
            next_flush = time.perf_counter() + BATCH_INTERVAL
    if pending and oldest is not None:
        q.put((oldest, EventBatch(tuple(pending), time.time())))
    q.put(None)
    ui_thread.join()
    wall = time.perf_counter() - start
    lags.sort()
    p = (lambda f: lags[min(len(lags) - 1, int(f * len(lags)))] * 1000) if lags else (lambda f: 0.0)
    print(f"paced     target {rate:,.0f} events/s for {seconds:g} s: folded {folded[0]:,} events"
          f" at {folded[0] / wall:,.0f}/s; UI thread busy {100 * busy[0] / wall:.0f} %;"
          f" lag p50 {p(0.5):.0f} ms, p99 {p(0.99):.0f} ms, max {p(1.0):.0f} ms")


def task_rows(state: State, now: float) -> list[dict[str, Any]]:
    return [{"id": t.uuid, "name": t.name, "state": t.state, "worker": t.worker, "queue": t.queue,
             "exc_type": t.exc_type, "exception": t.exception, "signature": t.signature,
             "root_id": t.root_id, "args": t.args, "kwargs": t.kwargs, "retries": t.retries,
             "runtime": t.runtime, "sent": t.sent, "received": t.received,
             "started": t.started} for t in state.tasks.values()]


def filtering(model: Any) -> None:
    state: State = getattr(model, "state", model)
    now = (state.last_event_at or time.time()) + 30.0  # the stream's own time
    t0 = time.perf_counter()
    rows = task_rows(state, now)
    build = time.perf_counter() - t0
    print(f"filter    {len(rows):,} task rows built in {build * 1000:.0f} ms")
    for text in ("state:FAILURE", "name:*charge* !state:SUCCESS", "exc:CardDeclined age>1m",
                 "(queue:emails OR queue:media) runtime>100ms", "declined"):
        query = parse(text)
        t0 = time.perf_counter()
        hits = sum(1 for row in rows if query.matches(row, now))
        took = time.perf_counter() - t0
        print(f"          {text!r:<48} {hits:>7,} hits in {took * 1000:>5.0f} ms")


class _Preloaded:
    """A Source posting pre-built batches, then idling (for the keypress measurement)."""

    def __init__(self, batches: list[EventBatch], workers: int) -> None:
        self.batches = batches
        self.workers = workers
        self.done = threading.Event()

    def run(self, post: Callable[[object], None], cancelled: Callable[[], bool]) -> None:
        post(LinkStatus("live", "bench://synthetic", since=time.time()))
        post(BrokerFigures(tuple(QueueFigures(q, 100, 0, 4, 0, 3.0, self.workers)
                                 for q in QUEUES),
                           {f"worker{i}@host{i // 8}": {"queues": QUEUES}
                            for i in range(self.workers)}, time.time()))
        for batch in self.batches:
            if cancelled():
                return
            post(batch)
        self.done.set()
        while not cancelled():
            time.sleep(0.05)


def keypress_latency(batches: list[EventBatch], workers: int, keys: list[str]) -> None:
    try:
        from tqmon.app import TqmonApp
    except ImportError as exc:
        print(f"keypress  skipped: the dashboard (tqmon.app) is not available ({exc})")
        return
    source = _Preloaded(batches, workers)
    app = TqmonApp(source_factory=lambda: source, gate=None, read_only=True,
                   broker_label="bench://synthetic")

    async def drive() -> list[tuple[str, float]]:
        out = []
        async with app.run_test(size=(200, 50)) as pilot:
            deadline = time.monotonic() + 300
            while not source.done.is_set() and time.monotonic() < deadline:
                await pilot.pause(0.1)
            await pilot.pause(1.0)
            for key in keys:
                t0 = time.perf_counter()
                await pilot.press(key)
                await pilot.pause()  # until the screen has processed the key and refreshed
                out.append((key, time.perf_counter() - t0))
        return out

    timings = asyncio.run(drive())
    values = sorted(t for _, t in timings)
    shown = ", ".join(f"{k}:{t * 1000:.0f}" for k, t in timings)
    print(f"keypress  {len(values)} keys on the loaded cluster: p50 {statistics.median(values) * 1000:.0f}"
          f" ms, max {values[-1] * 1000:.0f} ms  ({shown} ms)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=5_000.0,
                        help="events/s for the paced run (tqmon-ux.md §3.9 budget: 5,000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the paced run")
    parser.add_argument("--keys", default="2,3,4,5,6,7,1,4,j,j,k",
                        help="keys pressed for the latency measurement")
    parser.add_argument("--no-ui", action="store_true", help="skip the keypress measurement")
    parser.add_argument("--python-gc", action="store_true",
                        help="keep Python's default GC thresholds (tqmon's CLI raises them)")
    ns = parser.parse_args(argv)
    if ns.python_gc:
        print(f"gc        Python defaults {gc.get_threshold()}")
    else:
        tune_gc()
        print(f"gc        tqmon's thresholds {gc.get_threshold()} (--python-gc: defaults)")

    t0 = time.perf_counter()
    bodies, n_events, span = generate(ns.tasks, ns.workers)
    size = sum(len(b) for _, b in bodies)
    natural = n_events / span
    print(f"stream    {ns.tasks:,} tasks, {ns.workers} workers: {n_events:,} events in"
          f" {len(bodies):,} bodies ({size / 1e6:.0f} MB), {natural:,.0f} events/s over"
          f" {span:.0f} s of cluster time (generated in {time.perf_counter() - t0:.1f} s)")
    gc.freeze()  # the pre-built stream is not the monitor's garbage
    model, batches = unpaced(bodies, n_events)
    paced(bodies, ns.rate, ns.seconds, natural)
    filtering(model)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"memory    peak RSS {rss:,.0f} MB (stream, decoded batches and two models included)")
    if not ns.no_ui:
        keypress_latency(batches, ns.workers, [k for k in ns.keys.split(",") if k])


if __name__ == "__main__":
    main()
