"""Crash scenarios: worker main process killed (R1, R1b), pool children killed (R2),
a task that kills its own process (R3), multi-process SQLite contention with kills (R16)."""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from typing import Any

from bench.reliability import app as tasks
from bench.reliability.chaos import Cluster, Fault, WorkerProc, wait_for
from bench.reliability.ledger import Analysis, LedgerView, analyse
from bench.reliability.report import Result
from bench.reliability.suite import scenario

CONCURRENCY = 2
PREFETCH = 4  # the default multiplier: a worker holds 8 messages at most
RESTART_DELAY = 0.5


def account(res: Result, view: LedgerView, dead: set[str], c: Cluster | None = None,
            **kw: Any) -> Analysis:
    """Fill the table columns from the ledger analysis; with ``c``, also cross-check
    the result backend: a task whose body completed must be SUCCESS there."""
    a = analyse(view, dead, **kw)
    res.tasks, res.lost, res.duplicates, res.phantom = (a.expected, len(a.lost), a.duplicates,
                                                        len(a.phantom))
    if c is not None:
        done = sorted(view.completed(_expected(view, kw)))
        sample = done if len(done) <= 5000 else c.rng.sample(done, 5000)
        wrong = {t: c.app.AsyncResult(t).state for t in sample}
        wrong = {t: s for t, s in wrong.items() if s != "SUCCESS"}
        res.figures["backend_mismatch"] = len(wrong)
        res.check("backend SUCCESS for every completed body", not wrong,
                  list(wrong.items())[:3])
    return a


def _expected(view: LedgerView, kw: dict[str, Any]) -> set[str]:
    kinds = kw.get("kinds")
    return {t for t in view.ids() if kinds is None or view.enqueued[t][1] in kinds}


def rerun_delays(view: LedgerView, faults: list[Fault]) -> list[float]:
    """For every redelivered run (attempt ≥ 2), the time since the fault before it."""
    kills = sorted(f.wall for f in faults)
    out = []
    for run in view.all_starts():
        if run.attempt >= 2:
            before = [k for k in kills if k <= run.start]
            if before:
                out.append(run.start - before[-1])
    return out


def settle(c: Cluster, res: Result, view_done: Any, timeout: float) -> bool:
    """Wait for ``view_done(view)``, then a lease and a bit more so that a lingering
    redelivery (a lease expiring under a healthy worker) would show up. A timeout is
    a failed check, not an abort: the row still gets its lost/duplicate counts."""
    try:
        wait_for(lambda: view_done(c.view()), timeout, "the tasks", interval=0.2)
    except TimeoutError:
        res.check(f"all handled within {timeout:.0f} s", False, c.stats())
        return False
    time.sleep(c.lease + 1.0)
    return True


def _reached(c: Cluster, count: int) -> bool:
    return len(c.view().completed()) >= count


def _kill_and_restart(c: Cluster, victim: WorkerProc, name: str, **opts: Any) -> Fault:
    fault = c.kill_worker(victim)
    time.sleep(RESTART_DELAY)
    c.start_worker(name, **opts)
    return fault


def _worker_crash(c: Cluster, res: Result, size: dict[str, Any], late: bool) -> None:
    n, kills = size["tasks"], size["kills"]
    opts: dict[str, Any] = {"concurrency": CONCURRENCY, "prefetch": PREFETCH}
    bound = CONCURRENCY * PREFETCH
    for name in ("w1", "w2"):
        c.start_worker(name, **opts)
    task = tasks.late if late else tasks.early
    c.send_many(task, [(i, size["sleep"]) for i in range(n)], kind="t")
    children: dict[int, set[int]] = {}  # fault index -> pool children of the victim
    for k, threshold in enumerate(sorted(c.rng.sample(range(n // 10, n * 8 // 10), kills))):
        wait_for(functools.partial(_reached, c, threshold), size["timeout"],
                 f"{threshold} completions", interval=0.1)
        time.sleep(c.rng.uniform(0.0, 0.2))
        victim = c.rng.choice(c.live_workers())
        children[k] = {p.pid for p in victim.children()}
        _kill_and_restart(c, victim, f"w{len(c.workers) + 1}", **opts)
    if late:
        settle(c, res, lambda v: len(v.completed()) >= n, size["timeout"])
    else:  # losses allowed: wait until the broker holds nothing and a lease went by
        settle(c, res, lambda v: c.drained(), size["timeout"])
    view, dead = c.view(), c.dead_ids()
    a = account(res, view, dead, c)
    res.recovery = rerun_delays(view, c.faults)
    res.recovery_label = "kill→re-run"
    total_bound = bound * len(c.faults)
    res.figures.update(inflight_bound=total_bound, extra_starts=a.extra_starts,
                       dlq=a.dead_lettered, dup_per_kill=_per_fault(view, a, c.faults))
    res.check("phantom == 0", res.phantom == 0, a.phantom[:5])
    res.check("broker drained", c.drained(), c.stats())
    if late:
        res.check("lost == 0", res.lost == 0, a.lost[:5])
        res.check("dup <= Σ in-flight", res.duplicates <= total_bound,
                  f"{res.duplicates} > {total_bound}")
        res.check("nothing dead-lettered", a.dead_lettered == 0, a.dead_lettered)
    else:
        res.check("dup == 0 (early ack)", res.duplicates == 0 and a.extra_starts == 0,
                  f"dup={res.duplicates} extra_starts={a.extra_starts} {a.duplicated_ids[:3]}")
        res.check("lost <= Σ in-flight", res.lost <= total_bound, f"{res.lost} > {total_bound}")
        victims = set().union(*children.values()) if children else set()
        unattributed = [t for t in a.lost if view.starts.get(t)
                        and all(r.pid not in victims for r in view.starts[t])]
        res.check("each loss on a killed worker", not unattributed, unattributed[:3])


def _per_fault(view: LedgerView, a: Analysis, faults: list[Fault]) -> list[int]:
    """Duplicates attributed to the fault preceding each duplicate's second completion."""
    counts = [0] * len(faults)
    walls = [f.wall for f in faults]
    for tid in a.duplicated_ids:
        for run in sorted(view.ends[tid], key=lambda r: r.end or 0)[1:]:
            before = [i for i, w in enumerate(walls) if w <= (run.end or 0)]
            if before:
                counts[before[-1]] += 1
    return counts


@scenario("R1", "worker main process SIGKILLed, acks_late", ci={
    "tasks": 2000, "kills": 3, "sleep": 0.005, "timeout": 60}, soak={
    "tasks": 10000, "kills": 5, "sleep": 0.005, "timeout": 600})
def r1(c: Cluster, res: Result, size: dict[str, Any]) -> None:
    _worker_crash(c, res, size, late=True)


@scenario("R1b", "worker main process SIGKILLed, early ack", ci={
    "tasks": 2000, "kills": 3, "sleep": 0.005, "timeout": 60}, soak={
    "tasks": 10000, "kills": 5, "sleep": 0.005, "timeout": 600})
def r1b(c: Cluster, res: Result, size: dict[str, Any]) -> None:
    _worker_crash(c, res, size, late=False)


@scenario("R2", "pool children SIGKILLed", ci={
    "tasks": 1000, "kills": 10, "sleep": 0.02, "timeout": 60}, soak={
    "tasks": 10000, "kills": 20, "sleep": 0.02, "timeout": 600})
def r2(c: Cluster, res: Result, size: dict[str, Any]) -> None:
    n = size["tasks"]
    workers = [c.start_worker(name, concurrency=CONCURRENCY, prefetch=PREFETCH)
               for name in ("w1", "w2")]
    parents = {w.name: w.pid for w in workers}
    c.send_many(tasks.late, [(i, size["sleep"]) for i in range(n)], kind="t")
    wait_for(lambda: len(c.view().completed()) >= n // 20, size["timeout"], "a start")
    refill: list[float] = []
    victims: list[int] = []
    for _ in range(size["kills"]):
        victim = c.rng.choice(workers)
        before = {p.pid for p in victim.children()}
        fault = c.kill_child(victim)
        if fault is None:
            continue
        victims.append(fault.pid)
        survivors = before - {fault.pid}

        def refilled(w: WorkerProc = victim, keep: set[int] = survivors) -> bool:
            kids = {p.pid for p in w.children()}
            return len(kids) >= CONCURRENCY and bool(kids - keep)

        wait_for(refilled, 10, "the pool to refill", interval=0.002)
        refill.append(time.monotonic() - fault.mono)
        time.sleep(c.rng.uniform(0.1, 0.5))
    settle(c, res, lambda v: len(v.completed()) >= n, size["timeout"])
    view, dead = c.view(), c.dead_ids()
    a = account(res, view, dead, c)
    interrupted = {r.task_id for p in victims for runs in view.starts.values() for r in runs
                   if r.pid == p and not any(e.pid == p for e in view.ends.get(r.task_id, []))}
    res.recovery = sorted(refill)
    res.recovery_label = "kill→pool refilled"
    reruns = rerun_delays(view, c.faults)
    res.figures.update(interrupted=len(interrupted), rerun_max=max(reruns, default=0.0),
                       extra_starts=a.extra_starts, dlq=a.dead_lettered)
    res.check("lost == 0", res.lost == 0, a.lost[:5])
    res.check("phantom == 0", res.phantom == 0, a.phantom[:5])
    res.check("dup <= kills", res.duplicates <= len(c.faults), res.duplicates)
    res.check("parents survive", all(w.alive() and w.pid == parents[w.name] for w in workers),
              [(w.name, w.alive()) for w in workers])
    res.check("pool refills <= 2 s", max(refill, default=0) <= 2.0, max(refill, default=0))
    res.check("interrupted tasks re-ran", interrupted <= view.completed(), interrupted
              - view.completed())
    res.check("broker drained", c.drained(), c.stats())


@scenario("R3", "task that kills its own process", ci={
    "tasks": 500, "sleep": 0.005, "timeout": 60}, soak={
    "tasks": 2000, "sleep": 0.005, "timeout": 300}, max_deliveries=3)
def r3(c: Cluster, res: Result, size: dict[str, Any]) -> None:
    n = size["tasks"]
    for name in ("w1", "w2"):
        c.start_worker(name, concurrency=CONCURRENCY, prefetch=PREFETCH)
    t0 = time.time()
    c.send_many(tasks.late, [(i, size["sleep"]) for i in range(n // 2)], kind="t")
    bad = c.send(tasks.poison, kind="poison")
    c.send_many(tasks.late, [(i, size["sleep"]) for i in range(n // 2, n)], kind="t")
    settle(c, res, lambda v: len(v.completed(v.ids("t"))) >= n and bad.id in c.dead_ids(),
           size["timeout"])
    view = c.view()
    done_at = max(r.end or 0 for r in view.all_ends())
    a = account(res, view, c.dead_ids(), c, kinds={"t"})
    letters = [d for d in c.app.transport.dead_letters("celery", limit=1000)
               if d.message_id == bad.id]
    attempts = sorted(r.attempt for r in view.starts.get(bad.id, []))
    max_del = int(c.app.conf.broker_max_deliveries)
    state = c.app.AsyncResult(bad.id).state
    exc = c.app.AsyncResult(bad.id).result
    res.faults = len(attempts)
    if letters:
        res.recovery = [letters[0].dead_at - view.enqueued[bad.id][0]]
    res.recovery_label = "enqueue→DLQ"
    res.figures.update(attempts=attempts, max_deliveries=max_del,
                       dlq_reason=(letters[0].reason[:60] if letters else None),
                       others_per_s=round(n / max(done_at - t0, 1e-6)), state=state,
                       exc=type(exc).__name__)
    res.check("attempts == max_deliveries", attempts == list(range(1, max_del + 1)), attempts)
    res.check("in the dead-letter queue once", len(letters) == 1, len(letters))
    res.check("DLQ counts the attempts", bool(letters) and letters[0].attempts == max_del,
              letters[0].attempts if letters else None)
    res.check("result FAILURE(WorkerLostError)",
              state == "FAILURE" and type(exc).__name__ == "WorkerLostError", (state, exc))
    res.check("others: lost == 0", res.lost == 0, a.lost[:5])
    res.check("others: dup == 0", res.duplicates == 0, a.duplicated_ids[:5])
    res.check("phantom == 0", res.phantom == 0, a.phantom[:5])
    res.check("broker drained", c.drained(), c.stats())


@scenario("R16", "2 producers + 2 workers + a reader on one SQLite file, SIGKILLs", ci={
    "tasks": 2000, "kills": 3, "sleep": 0.002, "timeout": 60}, soak={
    "tasks": 20000, "kills": 8, "sleep": 0.002, "timeout": 900})
def r16(c: Cluster, res: Result, size: dict[str, Any]) -> None:
    n = size["tasks"]
    opts: dict[str, Any] = {"concurrency": CONCURRENCY, "prefetch": PREFETCH}
    for name in ("w1", "w2"):
        c.start_worker(name, **opts)
    stop, summary = c.dir / "reader.stop", c.dir / "reader.json"
    reader = c.start_helper(["read", "--stop", str(stop), "--out", str(summary)], "reader.log")
    wal = c.dir / "tq.db-wal"
    wal_max = [0]
    wal_series: list[int] = []  # MB, every 5 s: a sawtooth is bounded, a ramp is not
    sampling = threading.Event()

    def sample() -> None:
        ticks = 0
        while not sampling.is_set():
            try:
                size_now = os.path.getsize(wal)
            except OSError:
                size_now = 0
            wal_max[0] = max(wal_max[0], size_now)
            if ticks % 100 == 0:
                wal_series.append(round(size_now / 2**20))
            ticks += 1
            sampling.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    producers = [c.start_helper(["produce", "--n", str(n // 2), "--seconds",
                                 str(size["sleep"])], f"producer{i}.log") for i in (1, 2)]
    try:
        for _ in range(size["kills"]):
            time.sleep(c.rng.uniform(0.3, 1.5))
            victim = c.rng.choice(c.live_workers())
            _kill_and_restart(c, victim, f"w{len(c.workers) + 1}", **opts)
        rcs = [p.wait(size["timeout"]) for p in producers]
        settle(c, res, lambda v: len(v.completed()) >= n, size["timeout"])
        stop.touch()
        reader.wait(30)
    finally:
        sampling.set()
        sampler.join(5)
    read = json.loads(summary.read_text()) if summary.exists() else {}
    view, dead = c.view(), c.dead_ids()
    a = account(res, view, dead, c)
    res.recovery = rerun_delays(view, c.faults)
    res.recovery_label = "kill→re-run"
    bound = CONCURRENCY * PREFETCH * len(c.faults)
    locked = c.log_grep("database is locked")
    helper_errors = c.log_grep("HELPER-ERROR")
    wal_end = wal.stat().st_size if wal.exists() else 0
    res.figures.update(wal_max_mb=round(wal_max[0] / 2**20, 2), wal_end_mb=round(wal_end / 2**20, 2),
                       wal_mb_every_5s=wal_series,
                       reader_polls=read.get("polls"),
                       reader_p99_ms=round(read.get("p99_ms") or 0, 1), enqueued=len(view.enqueued))
    res.check("producers ok", rcs == [0, 0] and len(view.enqueued) == n, (rcs, len(view.enqueued)))
    res.check("lost == 0", res.lost == 0, a.lost[:5])
    res.check("phantom == 0", res.phantom == 0, a.phantom[:5])
    res.check("dup <= Σ in-flight", res.duplicates <= bound, f"{res.duplicates} > {bound}")
    res.check("no 'database is locked'", not locked, locked[:3])
    res.check("reader/producer errors == 0", not helper_errors and read.get("errors") == 0,
              helper_errors[:3] or read)
    res.check("WAL < 64 MB", wal_max[0] < 64 * 2**20, wal_max[0])
    res.check("broker drained", c.drained(), c.stats())
