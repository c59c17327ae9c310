"""Flow-control scenarios: warm shutdown (R4), ETA longer than the lease (R13),
prefetch starvation (R20) and the child-recycling memory soak (R23)."""

from __future__ import annotations

import bisect
import datetime as dt
import threading
import time
from collections import Counter
from typing import Any

import psutil

from bench.reliability import app as tasks
from bench.reliability.chaos import Cluster, WorkerProc, wait_for
from bench.reliability.crash import account
from bench.reliability.ledger import percentile
from bench.reliability.report import Result
from bench.reliability.suite import scenario


def wait_progress(c: Cluster, ids: set[str] | None = None, *, want: int | None = None,
                  stall: float = 20.0, timeout: float = 600.0, or_drained: bool = False) -> None:
    """Wait until ``want`` of ``ids`` (default: all of them; ``ids`` None: any task)
    completed; fail if nothing completes for ``stall`` seconds (a stuck pool) or after
    ``timeout``. ``or_drained``: also return once the broker holds nothing and no task
    completed for 2 s (some tasks were lost: the caller counts them)."""
    target = len(ids or ()) if want is None else want
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while True:
        view = c.view()
        done = len(view.completed(ids)) if ids is not None else len(view.completed())
        now = time.monotonic()
        if done >= target:
            return
        if done != last:
            last, last_change = done, now
        if or_drained and now - last_change > 2.0 and c.drained():
            return
        if now - last_change > stall:
            raise TimeoutError(f"stalled: no task completed for {stall:.0f}s"
                               f" ({done}/{target} done; {c.stats()})")
        if now > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s ({done}/{target} done)")
        time.sleep(0.2)


def _shutdown_phase(c: Cluster, res: Result, size: dict[str, Any], tag: str,
                    soft: float | None) -> dict[str, Any]:
    mult, long = size["prefetch"], size["long"]
    held = 2 * mult
    extra = ["--soft-shutdown-timeout", str(soft)] if soft is not None else []
    w = c.start_worker(f"{tag}1", concurrency=2, prefetch=mult, extra=extra)
    longs = c.send_many(tasks.late, [(i, long) for i in range(2)], kind=f"{tag}-long")
    long_ids = {r.id for r in longs}
    wait_for(lambda: all(c.view().starts.get(i) for i in long_ids), 20, "the long tasks to start")
    shorts = c.send_many(tasks.late, [(i, 0.0) for i in range(size["shorts"])],
                         kind=f"{tag}-short")
    wait_for(lambda: c.stats().in_flight >= held, 20, f"{held} messages held")
    kids = {p.pid for p in w.children()}
    c.term_worker(w)
    t0 = time.monotonic()
    # everything but the two running tasks must be claimable again, at once
    wait_for(lambda: c.stats().depth >= len(shorts), 3 * c.lease, "prefetched requeued",
             interval=0.005)
    requeue = time.monotonic() - t0
    handback = None
    if soft is not None:
        wait_for(lambda: c.stats().depth >= len(shorts) + 2, long + 10, "running handed back",
                 interval=0.005)
        handback = time.monotonic() - t0
    rc = w.proc.wait(long + 20)
    exited = time.monotonic() - t0
    view = c.view()
    finished_there = {i for i in long_ids if any(r.pid in kids for r in view.ends.get(i, []))}
    w2 = c.start_worker(f"{tag}2", concurrency=2, prefetch=mult)
    wait_progress(c, view.ids(f"{tag}-long") | view.ids(f"{tag}-short"), timeout=60)
    wait_for(c.drained, 10, "the broker to drain")
    c.stop_worker(w2)
    return {"requeue": requeue, "handback": handback, "exited": exited, "rc": rc,
            "finished_on_first": len(finished_there), "prefetched": held - 2}


@scenario("R4", "SIGTERM with long tasks running and prefetched ones", ci={
    "long": 4.0, "shorts": 40, "prefetch": 10}, soak={
    "long": 10.0, "shorts": 400, "prefetch": 50}, lease=10.0)
def r4(c: Cluster, res: Result, size: dict[str, Any]) -> None:
    warm = _shutdown_phase(c, res, size, "warm", None)
    soft = _shutdown_phase(c, res, size, "soft", 1.0)
    view = c.view()
    a = account(res, view, c.dead_ids(), c)
    res.recovery = [warm["requeue"], soft["requeue"]]
    res.recovery_label = "SIGTERM→prefetched ready"
    res.figures.update(lease=c.lease, prefetched=warm["prefetched"],
                       warm_exit_s=warm["exited"], soft_handback_s=soft["handback"],
                       soft_exit_s=soft["exited"])
    res.check("requeue latency << lease", max(res.recovery) < min(1.0, c.lease / 4),
              res.recovery)
    res.check("warm: running tasks finished there", warm["finished_on_first"] == 2, warm)
    res.check("soft timeout: running handed back", soft["finished_on_first"] == 0
              and soft["handback"] is not None and soft["handback"] < size["long"], soft)
    res.check("workers exited 0", warm["rc"] == 0 and soft["rc"] == 0, (warm["rc"], soft["rc"]))
    res.check("lost == 0", res.lost == 0, a.lost[:5])
    res.check("dup == 0", res.duplicates == 0, a.duplicated_ids[:5])
    res.check("phantom == 0", res.phantom == 0, a.phantom[:5])


@scenario("R13", "countdown longer than the lease", ci={
    "tasks": 200, "countdown": 6.0}, soak={"tasks": 500, "countdown": 30.0}, lease=2.0)
def r13(c: Cluster, res: Result, size: dict[str, Any]) -> None:
    n, countdown = size["tasks"], size["countdown"]
    for name in ("w1", "w2"):
        c.start_worker(name, concurrency=2)
    not_before = time.time() + countdown
    eta = dt.datetime.fromtimestamp(not_before, tz=dt.UTC)
    c.send_many(tasks.due, [(i, not_before) for i in range(n)], kind="t", eta=eta)
    wait_for(lambda: c.stats().scheduled == n, 5, "the messages to wait broker-side")
    ids = c.view().ids("t")
    wait_progress(c, ids, stall=countdown + 20, timeout=countdown + 60)
    time.sleep(2 * c.lease + 1.0)  # several leases: a re-delivery would show up now
    view = c.view()
    a = account(res, view, c.dead_ids(), c)
    late_by = [float(r.extra) for runs in view.ends.values() for r in runs]
    starts = [len(view.starts.get(i, [])) for i in ids]
    res.recovery = late_by
    res.recovery_label = "lateness"
    res.figures.update(countdown=countdown, lease=c.lease, min_lateness=min(late_by),
                       max_starts=max(starts))
    res.check("none early", min(late_by) >= 0.0, min(late_by))
    res.check("each ran exactly once", max(starts) == 1 and res.duplicates == 0,
              f"max starts {max(starts)}, dup {res.duplicates}")
    res.check("lost == 0", res.lost == 0, a.lost[:5])
    res.check("phantom == 0", res.phantom == 0, a.phantom[:5])
    res.check("broker drained", c.drained(), c.stats())


@scenario("R20", "1 very long task + no-op tasks at -c 2", ci={
    "noops": 200, "rate": 50.0, "long": 8.0}, soak={"noops": 2000, "rate": 50.0, "long": 60.0})
def r20(c: Cluster, res: Result, size: dict[str, Any]) -> None:
    c.start_worker("w1", concurrency=2)  # default prefetch multiplier (4)
    long = c.send(tasks.late, 0, size["long"], kind="long")
    wait_for(lambda: c.view().starts.get(long.id), 20, "the long task to start")
    for i in range(size["noops"]):
        c.send(tasks.early, i, 0.0, kind="noop")
        time.sleep(1.0 / size["rate"])
    view = c.view()
    noops = view.ids("noop")
    wait_progress(c, noops | {long.id}, stall=size["long"] + 10, timeout=size["long"] + 60)
    view = c.view()
    a = account(res, view, c.dead_ids(), c)
    waits = [view.starts[i][0].start - view.enqueued[i][0] for i in noops if view.starts.get(i)]
    p99 = percentile(waits, 0.99) or 0.0
    long_run = view.ends[long.id][0]
    overlap = sum(1 for i in noops if view.starts.get(i)
                  and long_run.start <= view.starts[i][0].start <= (long_run.end or 0))
    res.recovery = waits
    res.recovery_label = "no-op wait"
    res.figures.update(p99_wait_ms=round(1000 * p99, 1), ran_beside_long=overlap)
    res.check("p99 wait < 1 s", p99 < 1.0, p99)
    res.check("no-ops ran while the long task ran", overlap >= len(noops) * 0.9, overlap)
    res.check("lost == 0", res.lost == 0, a.lost[:5])
    res.check("dup == 0", res.duplicates == 0, a.duplicated_ids[:5])


@scenario("R23", "memory soak with --max-tasks-per-child 50", ci={
    "tasks": 2000, "per_child": 50, "batch": 500, "timeout": 60}, soak={
    "tasks": 200000, "per_child": 50, "batch": 2000, "timeout": 3600})
def r23(c: Cluster, res: Result, size: dict[str, Any]) -> None:
    n, per_child, batch = size["tasks"], size["per_child"], size["batch"]
    deadline = time.monotonic() + size["timeout"]
    w = c.start_worker("w1", concurrency=2, extra=["--max-tasks-per-child", str(per_child)])
    samples: list[tuple[float, float]] = []  # (wall time, parent RSS MB)
    stop = threading.Event()

    def sample(worker: WorkerProc = w) -> None:
        proc = psutil.Process(worker.pid)
        while not stop.is_set():
            try:
                samples.append((time.time(), proc.memory_info().rss / 2**20))
            except psutil.Error:
                return
            stop.wait(0.1 if n < 20000 else 1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    sent, stuck = 0, ""
    try:
        while sent < n:  # keep at most two batches queued, not the whole soak at once
            k = min(batch, n - sent)
            c.send_many(tasks.early, [(sent + i, 0.0) for i in range(k)], kind="t")
            sent += k
            wait_progress(c, want=sent - batch, stall=20, or_drained=True,
                          timeout=deadline - time.monotonic())
        wait_progress(c, want=n, stall=20, or_drained=True, timeout=deadline - time.monotonic())
    except TimeoutError as exc:  # a stuck pool: still count what happened
        stuck = str(exc)
    finally:
        stop.set()
        sampler.join(5)
    res.check("no stall, done in time", not stuck and sent == n, stuck or f"sent {sent}/{n}")
    view = c.view()
    a = account(res, view, c.dead_ids(), c)
    children = view.pids()
    res.figures.update(children=len(children), expected_children=n // per_child,
                       rss_start_mb=round(samples[0][1], 1) if samples else None,
                       rss_end_mb=round(samples[-1][1], 1) if samples else None,
                       locked_errors=len(c.log_grep("database is locked")))
    ends = sorted(r.end or 0 for r in view.all_ends())
    slope = _slope_per_10k([(bisect.bisect_right(ends, t), rss) for t, rss in samples])
    growth = samples[-1][1] - samples[0][1] if samples else 0.0
    res.figures["rss_slope_mb_per_10k"] = round(slope, 3)
    if a.lost:  # how did they end? (never started + FAILURE = failed without running)
        outcomes = Counter(f"{r.state}:{type(r.result).__name__ if r.state == 'FAILURE' else ''}"
                           f":{'ran' if view.starts.get(r.id) else 'never-started'}"
                           for r in (c.app.AsyncResult(t) for t in a.lost[:50]))
        res.figures["lost_outcomes"] = dict(outcomes)
    res.check("lost == 0 (every task ran)", res.lost == 0, a.lost[:5])
    res.check("dup == 0", res.duplicates == 0, a.duplicated_ids[:5])
    res.check("children recycled", len(children) >= 0.8 * n / per_child, len(children))
    res.check("parent alive", w.alive(), w.proc.returncode)
    if n >= 20000:
        res.check("RSS slope < 1 MB/10k tasks", slope < 1.0, slope)
    else:  # a CI run is too short for a meaningful slope: bound the growth instead
        res.figures["rss_growth_mb"] = round(growth, 1)
        res.check("RSS growth < 5 MB", growth < 5.0, growth)


def _slope_per_10k(samples: list[tuple[int, float]]) -> float:
    """Least-squares RSS slope over the second half of the run, in MB per 10k tasks."""
    half = samples[len(samples) // 2:]
    xs = [x for x, _ in half]
    if len(half) < 3 or max(xs) == min(xs):
        return 0.0
    mx, my = sum(xs) / len(xs), sum(y for _, y in half) / len(half)
    num = sum((x - mx) * (y - my) for x, y in half)
    den = sum((x - mx) ** 2 for x in xs)
    return num / den * 10_000
