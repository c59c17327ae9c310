"""How fast ``tqcore.events.State`` folds a realistic event stream (no broker needed).

Run from the repository root::

    python -m bench.state_fold                  # 500,000 events, best of 3
    python -m bench.state_fold --events 100000 --repeat 1
    python -m bench.state_fold --workflows 0.1  # half the tasks in canvases
    python -m bench.state_fold --profile        # then cProfile one fold

The stream is synthetic but shaped like a busy cluster: 20 workers heartbeating every 2 s
(``worker-online`` first), 12 task types on 4 queues, every task ``sent → received → started →
succeeded`` (5 % ``failed`` with a repr, a traceback and ids in the message; 1 % retried once
first); 2 % of submissions are a workflow (a parent, a group of 8 and its chord body), so about
one task in six belongs to one (``--workflows 0.1`` makes it one in two). Events carry Celery's
common fields, ``local_received`` (as a receiver adds it) and tqcore's extra fields, and arrive
in timestamp order, shuffled in small windows as ``task.multi`` batches do. About 125k tasks are
folded into the default ``max_tasks`` of 100k, so eviction runs too.

The generated events are moved out of the garbage collector's sight (``gc.freeze()``) before
timing: in a live monitor each event is garbage a moment after it is folded, so a GC pass that
scans half a million retained event dicts would measure the benchmark, not the fold.

The target is **> 100,000 events/s on one core**, measured in CPU time of this process (so
other work on the machine does not count against it; wall clock is printed too). When Celery
is installed, its ``celery.events.state.State`` folds the same stream in the same run, as the
peer.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import random
import statistics
import time
import uuid
from typing import Any

from tqcore.events import State

TARGET = 100_000.0
WORKERS = 20
TASK_TYPES = [f"app.tasks.{name}" for name in (
    "send_email", "charge_card", "resize_image", "sync_account", "render_pdf", "index_doc",
    "notify", "import_csv", "compute_score", "refresh_cache", "archive", "webhook")]
QUEUES = ["default", "emails", "billing", "media"]
EXCEPTIONS = [
    ("CardDeclined", "card {id} declined for order {n}", "billing.py", "charge"),
    ("TimeoutError", "timed out after {n} seconds talking to 10.0.{n}.{n}", "http.py", "request"),
    ("KeyError", "'user_{n}'", "accounts.py", "load_user"),
    ("ValueError", "bad row {n} in file '/data/{id}.csv'", "importer.py", "parse_row"),
]
TRACEBACK = ('Traceback (most recent call last):\n  File "/app/celery/app/trace.py", line 451, in '
             'trace_task\n    R = retval = fun(*args, **kwargs)\n  File "/app/app/{file}", line {n}, '
             'in {func}\n    raise {exc}({msg!r})\n{exc}: {msg}\n')


def _common(host: str, pid: int, clock: int, ts: float, type_: str) -> dict[str, Any]:
    # ``local_received`` is what a Celery-style receiver adds on arrival.
    return {"hostname": host, "utcoffset": 0, "pid": pid, "clock": clock, "timestamp": ts,
            "type": type_, "local_received": ts + 0.002}


def generate(n_events: int, seed: int = 7, workflows: float = 0.02) -> list[dict[str, Any]]:
    """About ``n_events`` event dicts, ordered as a monitor would receive them; ``workflows`` is
    the share of submissions that are a canvas (a parent, a group of 8, a chord body)."""
    rng = random.Random(seed)
    hosts = [f"worker{i}@host{i // 4}" for i in range(WORKERS)]
    pids = {h: 1000 + i for i, h in enumerate(hosts)}
    stamped: list[tuple[float, int, dict[str, Any]]] = []
    order = 0

    def emit(ts: float, event: dict[str, Any]) -> None:
        nonlocal order
        order += 1
        stamped.append((ts, order, event))

    rate = 2_000.0  # tasks/s
    n_tasks = n_events // 4
    start = 1_800_000_000.0
    t = start
    clock = 0
    i = 0
    while i < n_tasks:
        in_flow = rng.random() < workflows
        root = str(uuid.UUID(int=rng.getrandbits(128)))
        group = str(uuid.UUID(int=rng.getrandbits(128)))
        body = str(uuid.UUID(int=rng.getrandbits(128)))
        members = [root]
        if in_flow:
            members += [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(8)] + [body]
        for k, task_id in enumerate(members):
            t += rng.expovariate(rate)
            i += 1
            name = rng.choice(TASK_TYPES)
            queue = QUEUES[TASK_TYPES.index(name) % len(QUEUES)]
            host = rng.choice(hosts)
            clock += 1
            headers: dict[str, Any] = {
                "uuid": task_id, "name": name, "args": f"({rng.randrange(10**6)}, 'x')",
                "kwargs": "{'force': False}", "retries": 0, "eta": None, "expires": None,
                "root_id": root, "parent_id": root if k else None, "queue": queue}
            if in_flow and 0 < k < len(members) - 1:
                headers.update(group=group, group_index=k - 1, chord=body)
            sent = t if k < len(members) - 1 else t + 0.5
            emit(sent, {**_common("gen1@producer", 77, clock, sent, "task-sent"), **headers,
                        "exchange": "", "routing_key": queue})
            received = sent + rng.uniform(0.001, 0.05)
            emit(received, {**_common(host, pids[host], clock, received, "task-received"),
                            **headers})
            started = received + rng.uniform(0.0005, 0.01)
            emit(started, {**_common(host, pids[host], clock, started, "task-started"),
                           "uuid": task_id})
            runtime = rng.lognormvariate(-3.0, 1.0)
            done = started + runtime
            roll = rng.random()
            if roll < 0.01:
                retried = done
                emit(retried, {**_common(host, pids[host], clock, retried, "task-retried"),
                               "uuid": task_id, "exception": "ConnectionError('reset')",
                               "traceback": "Traceback ...\nConnectionError: reset\n"})
                done = retried + 1.0
                emit(done - 0.5, {**_common(host, pids[host], clock, done - 0.5, "task-received"),
                                  **headers, "retries": 1})
                emit(done - 0.4, {**_common(host, pids[host], clock, done - 0.4, "task-started"),
                                  "uuid": task_id})
            if roll > 0.95:
                exc, template, file, func = rng.choice(EXCEPTIONS)
                msg = template.format(id=f"{rng.getrandbits(48):012x}", n=rng.randrange(10**5))
                emit(done, {**_common(host, pids[host], clock, done, "task-failed"),
                            "uuid": task_id, "exception": f"{exc}({msg!r})",
                            "traceback": TRACEBACK.format(file=file, n=rng.randrange(10, 400),
                                                          func=func, exc=exc, msg=msg),
                            "runtime": runtime, "exc_type": exc, "exc_message": msg})
            else:
                emit(done, {**_common(host, pids[host], clock, done, "task-succeeded"),
                            "uuid": task_id, "result": repr(rng.randrange(10**6)),
                            "runtime": runtime})
    end = t
    for w, host in enumerate(hosts):
        seq = 0
        beat = start - 1.0 + w * 0.1
        kind = "worker-online"
        while beat < end:
            seq += 1
            emit(beat, {**_common(host, pids[host], seq, beat, kind), "freq": 2.0, "active": 3,
                        "processed": seq * 10, "loadavg": [0.5, 0.4, 0.3], "sw_ident": "py-tqcore",
                        "sw_ver": "0.1.0", "sw_sys": "Linux", "pool_size": 8, "pool_busy": 3,
                        "queues": QUEUES, "cpu": 42.0, "rss": 123_456_789, "seq": seq})
            kind = "worker-heartbeat"
            beat += 2.0
    stamped.sort(key=lambda item: item[0])
    events = [e for _, _, e in stamped]
    # Workers flush task events in batches (task.multi, up to 24): shuffle within small windows.
    for lo in range(0, len(events), 8):
        window = events[lo:lo + 8]
        if rng.random() < 0.1:
            rng.shuffle(window)
            events[lo:lo + 8] = window
    return events


def fold_tqcore(events: list[dict[str, Any]]) -> tuple[float, float, State]:
    """(CPU seconds, wall seconds, state) of one fold into a fresh State."""
    clock = [events[-1]["timestamp"]]
    state = State(clock=lambda: clock[0])
    cpu, wall = time.process_time(), time.perf_counter()
    state.events(events)
    return time.process_time() - cpu, time.perf_counter() - wall, state


def fold_celery(events: list[dict[str, Any]]) -> tuple[float, float] | None:
    """(CPU seconds, wall seconds) of Celery's State folding the same events, if installed."""
    try:
        from celery.events.state import State as CeleryState
    except ImportError:
        return None
    copies = [dict(e) for e in events]  # Celery's State writes into the event dicts
    state = CeleryState(max_tasks_in_memory=100_000)
    cpu, wall = time.process_time(), time.perf_counter()
    for event in copies:
        state.event(event)
    return time.process_time() - cpu, time.perf_counter() - wall


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workflows", type=float, default=0.02,
                        help="share of submissions that are a canvas (default 0.02)")
    parser.add_argument("--no-celery", action="store_true", help="skip the Celery peer")
    parser.add_argument("--profile", action="store_true", help="cProfile one tqcore fold")
    args = parser.parse_args(argv)

    began = time.perf_counter()
    events = generate(args.events, workflows=args.workflows)
    kinds: dict[str, int] = {}
    for event in events:
        kinds[event["type"]] = kinds.get(event["type"], 0) + 1
    print(f"generated {len(events):,} events in {time.perf_counter() - began:.1f}s: "
          + ", ".join(f"{k} {n:,}" for k, n in sorted(kinds.items())))
    gc.collect()
    gc.freeze()

    cpu_times, wall_times = [], []
    state = None
    for _ in range(args.repeat):
        cpu, wall, state = fold_tqcore(events)
        cpu_times.append(cpu)
        wall_times.append(wall)
    assert state is not None
    snap_began = time.perf_counter()
    snap = state.snapshot()
    snap_ms = (time.perf_counter() - snap_began) * 1000
    rate = len(events) / min(cpu_times)
    verdict = "meets" if rate > TARGET else "MISSES"
    print(f"tqcore State: {rate:,.0f} events/s of CPU time (best of {args.repeat}; median "
          f"{len(events) / statistics.median(cpu_times):,.0f}/s; wall clock best "
          f"{len(events) / min(wall_times):,.0f}/s) — {verdict} the target of > {TARGET:,.0f}/s")
    print(f"  stored {snap.tasks_stored:,} tasks, evicted {snap.tasks_evicted:,}, "
          f"{len(snap.workers)} workers, {snap.signature_count} failure signatures, "
          f"{snap.workflow_count:,} workflows, malformed {snap.malformed}; "
          f"snapshot() took {snap_ms:.2f} ms")

    if not args.no_celery:
        peer = [t for t in (fold_celery(events) for _ in range(args.repeat)) if t]
        if peer:
            print(f"Celery 5 State (peer, same stream): {len(events) / min(c for c, _ in peer):,.0f} "
                  f"events/s of CPU time (wall clock {len(events) / min(w for _, w in peer):,.0f}/s)")
        else:
            print("Celery not installed: peer not measured (pip install '.[bench]')")

    if args.profile:
        clock = [events[-1]["timestamp"]]
        profiled = State(clock=lambda: clock[0])
        profiler = cProfile.Profile()
        profiler.runcall(profiled.events, events)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
