"""tqcore vs Celery 5.x on the same private Redis / RabbitMQ: throughput and latency.

Run from the repository root::

    python -m bench.throughput                    # both brokers, 5,000 tasks per rate
    python -m bench.throughput --broker redis --quick
    python -m bench.throughput --json out.json
    python -m bench.throughput --broker redis --profile   # then profile tqcore's hot paths

For each broker, and for tqcore and for Celery in turn (same server, separate namespaces:
tqcore under a key / entity prefix, Celery in its own Redis dbs), with the same four
tasks (``bench/throughput_apps/tq.py`` and ``cel.py``):

* **enqueue, one call at a time**: a producer process sends ``noop.delay()`` N times
  (after a few untimed warm-up calls); the figure is the median of three such runs, each
  of which fills the queue for one of the drains below. On RabbitMQ with publisher
  confirms (tqcore always confirms; Celery gets ``confirm_publish=True``).
* **enqueue through group**: ``group(noop.s() for _ in range(N)).apply_async()``, and
  for tqcore also N ``delay()`` calls inside ``app.producer_batch()`` (one bulk publish).
  The queue is purged afterwards and the purged count checked.
* **drain** (``ignore_result`` no-op, results off): with N queued, a worker is started
  with ``-P prefork -c 2``, ``-P threads -c 2`` or ``-P solo``. Every task run bumps a
  memory-mapped per-thread counter (``throughput_apps/counter.py``: no broker round trip),
  so the rate is N / (last run - first run) on the workers' own clocks, and
  **worker start -> first task** is first run - the moment the worker was spawned.
* **broker floor** (a note): a bare pika / redis-py client publishing one message at a
  time, no task-queue code (``throughput_apps/floor.py``): the ceiling of the
  one-call-at-a-time enqueue rows on this machine.
* **round trip**: against a running ``-P prefork -c 2`` worker (results on, Redis result
  backend), sequential ``rtt.delay().get()``: p50 and p99.
* **chord-1000** ``chord(add.s(i, i) x 1000)(tsum.s()).get()`` and **chain-200**
  ``chain(add.s(0, 1), add.s(1) x 199)().get()``: wall time from building the canvas to the
  result, median of ``--reps`` runs, with the value checked.

Workers run as the issue specifies: ``python -m tqcore -A bench.throughput_apps.tq worker
-P <pool> -c 2 -l WARNING`` and ``celery -A bench.throughput_apps.cel worker -P <pool> -c 2
--without-gossip --without-mingle --without-heartbeat -l WARNING`` (``-c`` dropped for solo).
That is each one's default for task events: tqcore sends them (tqmon needs them), Celery
does not. ``--task-events off`` runs tqcore with ``--without-task-events`` and ``on`` runs
Celery with ``-E``, to compare the same work.

Servers (redis-server, and for ``amqp`` a RabbitMQ node, whose results also go to Redis)
are started privately on free loopback ports in a temp dir; every process this run starts
is in its own session and is stopped at the end, whatever happens. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.embedded import (
    REPO_ROOT,
    BenchError,
    Procs,
    base_env,
    fresh_dir,
    log_tail,
)
from bench.throughput_apps import servers, spy
from bench.throughput_apps.counter import totals

SYSTEMS = ("tq", "cel")
SYSTEM_LABEL = {"tq": "tqcore", "cel": "Celery"}
POOLS = ("prefork", "threads", "solo")
WARMUP_SENDS = 50


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    unit: str  # "rate" (tasks/s), "ms", "s"
    higher_better: bool


ROWS = [
    Row("enqueue_one", "enqueue, 1 delay() at a time (tasks/s)", "rate", True),
    Row("enqueue_group", "enqueue, group of N (tasks/s)", "rate", True),
    Row("enqueue_batch", "enqueue, producer_batch bulk (tasks/s)", "rate", True),
    Row("drain_prefork", "drain, prefork -c 2, results off (tasks/s)", "rate", True),
    Row("drain_threads", "drain, threads -c 2, results off (tasks/s)", "rate", True),
    Row("drain_solo", "drain, solo, results off (tasks/s)", "rate", True),
    Row("rtt_p50", "round trip p50 (delay().get())", "ms", False),
    Row("rtt_p99", "round trip p99", "ms", False),
    Row("chord", "chord-1000 -> get()", "s", False),
    Row("chain", "chain-200 -> get()", "s", False),
    Row("start_prefork", "worker start -> 1st task, prefork", "s", False),
    Row("start_threads", "worker start -> 1st task, threads", "s", False),
    Row("start_solo", "worker start -> 1st task, solo", "s", False),
]

#: The issue's targets for tqcore (2-core machine), per broker: key -> (op, value in row unit).
TARGETS: dict[str, dict[str, tuple[str, float]]] = {
    "redis": {
        "enqueue_one": (">=", 6000), "enqueue_group": (">=", 50000),
        "enqueue_batch": (">=", 50000), "drain_prefork": (">=", 6000),
        "drain_threads": (">=", 6000), "rtt_p50": ("<=", 0.8), "chord": ("<=", 0.5),
        "chain": ("<=", 0.15), "start_prefork": ("<=", 0.3), "start_threads": ("<=", 0.3),
        "start_solo": ("<=", 0.3),
    },
    "amqp": {
        "enqueue_one": (">=", 6000), "drain_prefork": (">=", 5000),
        "drain_threads": (">=", 5000),
    },
}
CELERY_REF = ("Celery reference figures from the issue (2-core, Redis): drain 870/s, enqueue "
              "1,800/s, p50 3.2 ms, chord-1000 2.9 s, start -> 1st task 1.3 s")


@dataclass
class Config:
    n: int
    group_n: int
    rtt_k: int
    chord_n: int
    chain_n: int
    reps: int
    poll: float
    systems: tuple[str, ...]
    profile: bool = False
    #: "default" (each system's own), "on" (Celery with -E too) or "off" (tqcore without)
    task_events: str = "default"


@dataclass
class BrokerResult:
    broker: str
    values: dict[tuple[str, str], float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- environment per system ----------------------------------------------------------------------
def system_env(system: str, broker: str, redis_srv: servers.Server,
               rabbit_srv: servers.Server | None) -> dict[str, str]:
    """tqcore: broker under a private prefix, results in Redis db 1. Celery: its own dbs / queues."""
    if system == "tq":
        backend = redis_srv.url(1)
        if broker == "redis":
            url = f"{redis_srv.url(0)}?prefix=tqb:"
        else:
            assert rabbit_srv is not None
            url = f"{rabbit_srv.url()}?prefix=tqb."
        return base_env(BENCH_BROKER_URL=url, BENCH_BACKEND_URL=backend)
    backend = redis_srv.url(3)
    if broker == "redis":
        return base_env(BENCH_BROKER_URL=redis_srv.url(2), BENCH_BACKEND_URL=backend)
    assert rabbit_srv is not None
    return base_env(BENCH_BROKER_URL=rabbit_srv.url(), BENCH_BACKEND_URL=backend,
                    BENCH_CONFIRM="1")


def worker_argv(system: str, pool: str, task_events: str = "default") -> list[str]:
    conc = [] if pool == "solo" else ["-c", "2"]
    if system == "tq":
        events = ["--without-task-events"] if task_events == "off" else []
        return [sys.executable, "-m", "tqcore", "-A", "bench.throughput_apps.tq", "worker",
                "-P", pool, *conc, "-l", "WARNING", *events]
    events = ["-E"] if task_events == "on" else []
    return [sys.executable, "-m", "celery", "-A", "bench.throughput_apps.cel", "worker",
            "-P", pool, *conc, "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-l", "WARNING", *events]


# -- one client job (own process) -----------------------------------------------------------------
def run_client(procs: Procs, system: str, job: dict[str, Any], env: dict[str, str], tmp: Path,
               tag: str, timeout: float, profile_out: Path | None = None) -> dict[str, Any]:
    log = tmp / f"client-{tag}.log"
    out = tmp / f"client-{tag}.json"
    out.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "bench.throughput_apps.client", "--system", system,
            "--job", json.dumps(job), "--out", str(out)]
    if profile_out is not None:
        argv += ["--profile-out", str(profile_out)]
    proc = procs.start(argv, env=env, log=log)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        procs.stop(proc, grace=2)
        raise BenchError(f"{SYSTEM_LABEL[system]} client ({tag}) did not finish in {timeout:.0f}s"
                         f"\n--- client log ---\n{log_tail(log)}") from None
    procs.stop(proc)
    if rc != 0 or not out.exists():
        raise BenchError(f"{SYSTEM_LABEL[system]} client ({tag}) failed (exit {rc})"
                         f"\n--- client log ---\n{log_tail(log)}")
    return dict(json.loads(out.read_text()))


# -- drain ---------------------------------------------------------------------------------------
def start_spy(procs: Procs, pid: int, out: Path, tmp: Path,
              idle: bool = False) -> subprocess.Popen[Any] | None:
    if shutil.which("py-spy") is None:
        return None
    return procs.start(["py-spy", "record", "--pid", str(pid), "--rate", "250", "--subprocesses",
                        "--format", "raw", "--output", str(out), "--nonblocking", "--threads",
                        *(["--idle"] if idle else [])],
                       env=base_env(), log=tmp / f"{out.name}.log")


def stop_spy(procs: Procs, spy: subprocess.Popen[Any] | None) -> None:
    if spy is not None:
        procs.stop(spy, grace=15, sig=signal.SIGINT)  # py-spy writes its output on SIGINT


def drain(procs: Procs, system: str, pool: str, expect: int, env: dict[str, str], tmp: Path,
          cfg: Config, tag: str, spy_out: Path | None = None,
          count_on: servers.Server | None = None) -> dict[str, Any]:
    """Start a worker on ``expect`` queued noops; time it from the counters (and count the
    commands the Redis server ``count_on`` received meanwhile)."""
    marks = fresh_dir(tmp / f"marks-{tag}")
    if count_on is not None:
        servers.redis_calls(count_on, reset=True)
    log = tmp / f"worker-{tag}.log"
    t_start = time.time()
    worker = procs.start(worker_argv(system, pool, cfg.task_events),
                         env={**env, "BENCH_MARK_DIR": str(marks)},
                         log=log)
    spy_proc = start_spy(procs, worker.pid, spy_out, tmp) if spy_out else None
    deadline = time.monotonic() + max(60.0, expect / 200)
    cpu_from: tuple[int, float] | None = None
    try:
        while True:
            count, first, last = totals(str(marks))
            if cpu_from is None and count:
                cpu_from = (count, tree_cpu(worker.pid))  # start-up left out
            if count >= expect:
                break
            if worker.poll() is not None:
                raise BenchError(f"{SYSTEM_LABEL[system]} {pool} worker exited (code "
                                 f"{worker.returncode}) after {count} of {expect} tasks"
                                 f"\n--- worker log ---\n{log_tail(log)}")
            if time.monotonic() > deadline:
                raise BenchError(f"{SYSTEM_LABEL[system]} {pool} worker: {count} of {expect} "
                                 f"tasks ran before the timeout\n--- worker log ---\n"
                                 f"{log_tail(log)}")
            time.sleep(cfg.poll)
        cpu_to = tree_cpu(worker.pid)
        time.sleep(0.1)  # let the last writes land, then read a settled state
        count, first, last = totals(str(marks))
        calls = servers.redis_calls(count_on) if count_on is not None else None
    finally:
        stop_spy(procs, spy_proc)
        procs.stop(worker)
    assert first is not None and last is not None
    span = last - first
    assert cpu_from is not None
    ran = expect - cpu_from[0]
    return {"count": count, "expect": expect, "first_to_last_s": span,
            "cpu_us_per_task": (cpu_to - cpu_from[1]) * 1e6 / ran if ran > 0 else None,
            "rate": (count - 1) / span if span > 0 else None,
            "start_to_first_s": first - t_start,
            "rate_from_start": count / (last - t_start), "redis_calls": calls}


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its children."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def per_task(calls: dict[str, int] | None, n: int, top: int = 5) -> str:
    """``"4.02 (evalsha 2.00, publish 1.00, ...)"``: Redis commands per task."""
    if not calls:
        return "-"
    ranked = sorted(calls.items(), key=lambda kv: -kv[1])
    parts = ", ".join(f"{cmd} {c / n:.2f}" for cmd, c in ranked[:top] if c / n >= 0.01)
    return f"{sum(calls.values()) / n:.2f} ({parts})"


# -- per system ----------------------------------------------------------------------------------
def bench_system(procs: Procs, system: str, broker: str, env: dict[str, str], tmp: Path,
                 cfg: Config, res: BrokerResult, t0: float,
                 count_on: servers.Server | None = None) -> None:
    label = SYSTEM_LABEL[system]
    det: dict[str, Any] = res.details.setdefault(label, {})

    def step(msg: str) -> None:
        print(f"  [{time.monotonic() - t0:6.1f}s] {broker} {label}: {msg}", flush=True)

    def guarded(name: str, fn: Any) -> None:
        try:
            fn()
        except BenchError as exc:
            res.notes.append(f"{label} {name}: FAILED: {str(exc).splitlines()[0]}")
            det[f"{name}_error"] = str(exc)
            print(f"error ({label} {name}): {exc}", file=sys.stderr, flush=True)

    n = cfg.n
    enq_rates: list[float] = []
    cmds: list[str] = []
    cpu: list[str] = []
    for pool in POOLS:
        def one_pool(pool: str = pool) -> None:
            tag = f"{broker}-{system}-{pool}"
            step(f"enqueue {n:,} one at a time, then drain with -P {pool}")
            if count_on is not None:
                servers.redis_calls(count_on, reset=True)
            r = run_client(procs, system, {"kind": "enqueue_one", "n": n, "warmup": WARMUP_SENDS},
                           env, tmp, f"enq-{tag}", timeout=max(120.0, n / 100))
            enq_rates.append(n / r["elapsed"])
            det[f"enqueue_one_{pool}"] = n / r["elapsed"]
            if count_on is not None and pool == POOLS[0]:
                calls = servers.redis_calls(count_on)
                det["enqueue_one_redis_calls"] = calls
                cmds.append(f"enqueue {per_task(calls, n + WARMUP_SENDS)}")
            d = drain(procs, system, pool, n + WARMUP_SENDS, env, tmp, cfg, tag,
                      count_on=count_on)
            det[f"drain_{pool}"] = d
            if d["redis_calls"] is not None:
                cmds.append(f"drain -P {pool} {per_task(d['redis_calls'], d['count'])}")
            if d["cpu_us_per_task"] is not None:
                cpu.append(f"{pool} {d['cpu_us_per_task']:.0f} us")
            if d["rate"]:
                res.values[system, f"drain_{pool}"] = d["rate"]
            res.values[system, f"start_{pool}"] = d["start_to_first_s"]
            if d["count"] != d["expect"]:
                res.notes.append(f"{label} -P {pool}: {d['count']} runs counted for "
                                 f"{d['expect']} tasks sent")

        guarded(f"drain {pool}", one_pool)
    if cmds:
        res.notes.append(f"{label}: Redis commands executed per task (Lua-internal calls "
                         f"included; evalsha = script calls): " + "; ".join(cmds))
    if cpu:
        res.notes.append(f"{label}: worker CPU per task while draining (all its processes, "
                         f"start-up left out): " + ", ".join(cpu))
    if enq_rates:
        res.values[system, "enqueue_one"] = statistics.median(enq_rates)

    kinds = ["enqueue_group"] + (["enqueue_batch"] if system == "tq" else [])
    for kind in kinds:
        def bulk(kind: str = kind) -> None:
            step(f"{kind} of {cfg.group_n:,}")
            r = run_client(procs, system, {"kind": kind, "n": cfg.group_n}, env, tmp,
                           f"{kind}-{broker}-{system}", timeout=max(120.0, cfg.group_n / 100))
            det[kind] = r
            res.values[system, kind] = cfg.group_n / r["elapsed"]
            if r["purged"] != r["expected"]:
                res.notes.append(f"{label} {kind}: purged {r['purged']} messages, expected "
                                 f"{r['expected']}")

        guarded(kind, bulk)

    def latency() -> None:
        step(f"round trips x{cfg.rtt_k}, chord-{cfg.chord_n} x{cfg.reps}, "
             f"chain-{cfg.chain_n} x{cfg.reps} (-P prefork -c 2)")
        tag = f"rtt-{broker}-{system}"
        marks = fresh_dir(tmp / f"marks-{tag}")
        log = tmp / f"worker-{tag}.log"
        worker = procs.start(worker_argv(system, "prefork", cfg.task_events),
                             env={**env, "BENCH_MARK_DIR": str(marks)}, log=log)
        try:
            job = {"kind": "rtt", "k": cfg.rtt_k, "warmup": 20, "chord_n": cfg.chord_n,
                   "chain_n": cfg.chain_n, "reps": cfg.reps, "timeout": 60}
            try:
                r = run_client(procs, system, job, env, tmp, tag,
                               timeout=120 + cfg.rtt_k * 0.05 + cfg.reps * 130)
            except BenchError as exc:
                raise BenchError(f"{exc}\n--- worker log ---\n{log_tail(log)}") from None
        finally:
            procs.stop(worker)
        samples = sorted(r["rtt"])
        det["rtt"] = {"k": len(samples), "min_ms": samples[0] * 1e3,
                      "mean_ms": statistics.fmean(samples) * 1e3, "max_ms": samples[-1] * 1e3,
                      "chord_s": r["chord"], "chain_s": r["chain"]}
        res.values[system, "rtt_p50"] = pct(samples, 0.50) * 1e3
        res.values[system, "rtt_p99"] = pct(samples, 0.99) * 1e3
        res.values[system, "chord"] = statistics.median(r["chord"])
        res.values[system, "chain"] = statistics.median(r["chain"])

    guarded("latency/chord/chain", latency)


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def pct(sorted_samples: list[float], q: float) -> float:
    i = min(len(sorted_samples) - 1, max(0, round(q * (len(sorted_samples) - 1))))
    return sorted_samples[i]


def bench_broker(procs: Procs, broker: str, tmp: Path, cfg: Config, t0: float) -> BrokerResult:
    res = BrokerResult(broker)
    redis_srv = servers.start_redis(procs, fresh_dir(tmp / f"{broker}-redis"))
    rabbit_srv = None
    try:
        if broker == "amqp":
            print(f"  starting a private RabbitMQ node (redis for results at {redis_srv.url()})",
                  flush=True)
            rabbit_srv = servers.start_rabbitmq(procs, fresh_dir(tmp / "rabbit"))
            print(f"  RabbitMQ at {rabbit_srv.url()} (node {rabbit_srv.node})", flush=True)
        else:
            print(f"  private redis-server at {redis_srv.url()}", flush=True)
        for system in cfg.systems:
            env = system_env(system, broker, redis_srv, rabbit_srv)
            res.details.setdefault("urls", {})[SYSTEM_LABEL[system]] = {
                "broker": env["BENCH_BROKER_URL"], "backend": env["BENCH_BACKEND_URL"]}
            bench_system(procs, system, broker, env, tmp, cfg, res, t0,
                         count_on=redis_srv if broker == "redis" else None)
        floor(broker, rabbit_srv.url() if rabbit_srv else redis_srv.url(5), cfg.n, res)
        if cfg.profile and "tq" in cfg.systems:
            try:
                profile_tq(procs, broker, system_env("tq", broker, redis_srv, rabbit_srv), tmp,
                           cfg, res)
            except BenchError as exc:
                res.notes.append(f"profiling FAILED: {str(exc).splitlines()[0]}")
                print(f"error (profiling on {broker}): {exc}", file=sys.stderr, flush=True)
    finally:
        if rabbit_srv is not None:
            servers.stop_rabbitmq(procs, rabbit_srv)
        servers.stop_redis(procs, redis_srv)
    return res


def floor(broker: str, url: str, n: int, res: BrokerResult) -> None:
    """Note what a bare client (no task-queue code) gets publishing one message at a time:
    the ceiling of the one-call-at-a-time enqueue rows (see ``throughput_apps/floor.py``)."""
    what = ("a bare pika client publishing persistent messages with confirms" if broker == "amqp"
            else "a bare redis-py client LPUSHing")
    try:
        done = subprocess.run([sys.executable, "-m", "bench.throughput_apps.floor", broker, url,
                               str(n)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                              check=True)
        rate = float(json.loads(done.stdout.strip().splitlines()[-1])["rate"])
    except (subprocess.SubprocessError, ValueError, KeyError, IndexError) as exc:
        res.notes.append(f"broker floor FAILED: {str(exc).splitlines()[0]}")
        return
    res.notes.append(f"broker floor: {what}, one at a time, no task-queue code: {rate:,.0f}/s "
                     "(the ceiling of any client's one-call-at-a-time enqueue here)")


# -- profiling (tqcore only) ---------------------------------------------------------------------
def profile_tq(procs: Procs, broker: str, env: dict[str, str], tmp: Path, cfg: Config,
               res: BrokerResult) -> None:
    """cProfile the producer loop and the round-trip client; py-spy the workers."""
    n = cfg.n
    print(f"\n== profiling tqcore on {broker} (figures skewed by the profilers) ==", flush=True)
    # the group job purges the queue afterwards: first, before the queue is filled
    prof = tmp / f"prof-group-{broker}.prof"
    r = run_client(procs, "tq", {"kind": "enqueue_group", "n": cfg.group_n}, env, tmp,
                   f"prof-group-{broker}", timeout=max(180.0, n / 50), profile_out=prof)
    print(f"-- producer, group of {cfg.group_n:,} under cProfile: "
          f"{cfg.group_n / r['elapsed']:,.0f}/s --")
    print_pstats(prof)
    prof = tmp / f"prof-enqueue-{broker}.prof"
    r = run_client(procs, "tq", {"kind": "enqueue_one", "n": n, "warmup": WARMUP_SENDS}, env, tmp,
                   f"prof-enq-{broker}", timeout=max(180.0, n / 50), profile_out=prof)
    print(f"-- producer, {n:,} delay() calls under cProfile: {n / r['elapsed']:,.0f}/s --")
    print_pstats(prof)
    for pool in ("prefork", "threads"):
        spy_out = tmp / f"spy-drain-{broker}-{pool}.txt"
        d = drain(procs, "tq", pool, n + WARMUP_SENDS, env, tmp, cfg,
                  f"prof-{broker}-{pool}", spy_out=spy_out)
        print(f"\n-- worker -P {pool} -c 2 draining {n:,} under py-spy (--subprocesses): "
              f"{d['rate'] or 0:,.0f}/s --")
        print(spy.summarize(spy_out, top=15))
        if pool == "prefork":
            r = run_client(procs, "tq", {"kind": "enqueue_one", "n": n, "warmup": WARMUP_SENDS},
                           env, tmp, f"prof-enq2-{broker}", timeout=max(180.0, n / 50))
    # round trips: the client under cProfile, the worker under py-spy
    tag = f"prof-rtt-{broker}"
    log = tmp / f"worker-{tag}.log"
    worker = procs.start(worker_argv("tq", "prefork", cfg.task_events), env=env, log=log)
    spy_out = tmp / f"spy-{tag}.txt"
    spy_proc = start_spy(procs, worker.pid, spy_out, tmp, idle=True)
    prof = tmp / f"{tag}.prof"
    try:
        job = {"kind": "rtt", "k": cfg.rtt_k, "warmup": 20, "chord_n": cfg.chord_n,
               "chain_n": cfg.chain_n, "reps": 1, "timeout": 60}
        r = run_client(procs, "tq", job, env, tmp, tag, timeout=300, profile_out=prof)
    finally:
        stop_spy(procs, spy_proc)
        procs.stop(worker)
    s = sorted(r["rtt"])
    print(f"\n-- round-trip client, {len(s)} x delay().get() under cProfile: p50 "
          f"{pct(s, 0.5) * 1e3:.2f} ms --")
    print_pstats(prof)
    print("\n-- worker -P prefork -c 2 during round trips + chord + chain (py-spy --idle) --")
    print(spy.summarize(spy_out, top=15, wall=True))
    sys.stdout.flush()


def print_pstats(path: Path) -> None:
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(15)
    stats.sort_stats("cumulative").print_stats(25)


# -- report --------------------------------------------------------------------------------------
def fmt(row: Row, v: float | None) -> str:
    if v is None:
        return "-"
    if row.unit == "rate":
        return f"{v:,.0f}"
    if row.unit == "ms":
        return f"{v:.2f} ms"
    return f"{v:.3f} s"


def fmt_target(row: Row, target: tuple[str, float] | None) -> str:
    if target is None:
        return ""
    op, value = target
    shown = f"{value:,.0f}/s" if row.unit == "rate" else (
        f"{value:g} ms" if row.unit == "ms" else f"{value:g} s")
    return f"{op} {shown}"


def met(target: tuple[str, float] | None, v: float | None) -> str:
    if target is None:
        return ""
    if v is None:
        return "n/a"
    op, value = target
    ok = v >= value if op == ">=" else v <= value
    return "yes" if ok else "NO"


def table(res: BrokerResult, cfg: Config) -> tuple[str, list[dict[str, Any]]]:
    headers = ("metric", "tqcore", "Celery", "tqcore/Celery", "target (tqcore)", "met?")
    rows: list[tuple[str, ...]] = []
    records = []
    targets = TARGETS[res.broker]
    for row in ROWS:
        tq, cel = res.values.get(("tq", row.key)), res.values.get(("cel", row.key))
        if tq is None and cel is None and row.key not in targets:
            continue
        ratio = f"{tq / cel:.2f}x" if tq and cel else "-"
        label = row.label.replace("group of N", f"group of {cfg.group_n:,}")
        cel_s = "n/a" if row.key == "enqueue_batch" and cel is None else fmt(row, cel)
        target = targets.get(row.key)
        rows.append((label, fmt(row, tq), cel_s, ratio, fmt_target(row, target), met(target, tq)))
        records.append({"metric": row.key, "label": label, "unit": row.unit, "tqcore": tq,
                        "celery": cel, "ratio": tq / cel if tq and cel else None,
                        "target": list(target) if target else None,
                        "met": met(target, tq) or None})
    widths = [max(len(r[i]) for r in [*rows, headers]) for i in range(len(headers))]
    rule = "  ".join("-" * w for w in widths)
    left = {0, 4}

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    conf = ("tqcore confirms every publish; Celery with confirm_publish=True; results in Redis"
            if res.broker == "amqp" else "Redis broker and Redis results")
    conf += {"default": "; task events: tqcore on, Celery off (defaults)",
             "on": "; task events on for both", "off": "; task events off for both"
             }[cfg.task_events]
    out = [f"== {res.broker.upper() if res.broker == 'amqp' else 'Redis'}: tqcore vs Celery "
           f"(N = {cfg.n:,} per enqueue/drain, {cfg.rtt_k} round trips, median of {cfg.reps} "
           f"chords/chains; {conf}) ==", rule, line(headers), rule]
    out += [line(r) for r in rows]
    out.append(rule)
    out.append("tqcore/Celery: above 1x is better for tqcore on rates (tasks/s), below 1x on times")
    out += [f"note: {n}" for n in res.notes]
    return "\n".join(out), records


# -- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.throughput",
                                description=(__doc__ or "").split("\n")[0])
    p.add_argument("--broker", choices=["redis", "amqp", "both"], default="both")
    p.add_argument("--quick", action="store_true",
                   help="small sizes: 1,000 tasks per rate, 200 round trips, 1 chord/chain run")
    p.add_argument("--tasks", type=int, default=None, help="tasks per enqueue/drain (5,000)")
    p.add_argument("--group-tasks", type=int, default=None, help="tasks per group (= --tasks)")
    p.add_argument("--rtt", type=int, default=None, help="round trips (500; quick 200)")
    p.add_argument("--reps", type=int, default=None, help="chord/chain runs (3; quick 1)")
    p.add_argument("--chord", type=int, default=1000, help="chord header size (1,000)")
    p.add_argument("--chain", type=int, default=200, help="chain length (200)")
    p.add_argument("--poll", type=float, default=0.01, help="drain poll interval, s (0.01)")
    p.add_argument("--only", choices=["tqcore", "celery"], help="measure one system only")
    p.add_argument("--task-events", choices=["default", "on", "off"], default="default",
                   help="default: each system's own (tqcore on, Celery off); on: Celery with"
                        " -E too; off: tqcore with --without-task-events too")
    p.add_argument("--profile", action="store_true",
                   help="afterwards, profile tqcore (cProfile producer/client, py-spy workers)")
    p.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    p.add_argument("--keep", action="store_true", help="keep the temp directory (logs)")
    args = p.parse_args(argv)

    n = args.tasks or (1000 if args.quick else 5000)
    cfg = Config(n=n, group_n=args.group_tasks or n,
                 rtt_k=args.rtt or (200 if args.quick else 500), chord_n=args.chord,
                 chain_n=args.chain, reps=args.reps or (1 if args.quick else 3), poll=args.poll,
                 systems=(("tq",) if args.only == "tqcore" else ("cel",) if args.only == "celery"
                          else SYSTEMS),
                 profile=args.profile, task_events=args.task_events)
    if min(cfg.n, cfg.group_n, cfg.rtt_k, cfg.chord_n, cfg.chain_n, cfg.reps) <= 0:
        p.error("sizes must be positive")
    brokers = ["redis", "amqp"] if args.broker == "both" else [args.broker]
    tmp = Path(tempfile.mkdtemp(prefix="tqthroughput-"))
    procs = Procs()
    results: list[BrokerResult] = []
    rc = 0

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    t0 = time.monotonic()
    cmd = "python -m bench.throughput " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        print(f"{cmd}\n{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load average "
              f"{load()} at start; temp dir {tmp}", flush=True)
        for broker in brokers:
            print(f"\n== {broker} ==", flush=True)
            try:
                results.append(bench_broker(procs, broker, tmp, cfg, t0))
            except BenchError as exc:
                print(f"error ({broker}): {exc}", file=sys.stderr, flush=True)
                rc = 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        rc = 130
    finally:
        procs.stop_all()
    report: dict[str, Any] = {"command": cmd, "cpus": os.cpu_count(), "config": vars(cfg),
                              "loadavg_end": load(),
                              "elapsed_s": time.monotonic() - t0, "brokers": {}}
    print()
    for res in results:
        text, records = table(res, cfg)
        print(text + "\n")
        report["brokers"][res.broker] = {"rows": records, "notes": res.notes,
                                         "details": res.details}
        if any(note for note in res.notes if "FAILED" in note):
            rc = rc or 1
    if results:
        print(CELERY_REF)
        print(f"total time {time.monotonic() - t0:.0f}s; load average {load()} at the end "
              f"(other processes on this machine skew every figure)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    if args.keep or rc:
        print(f"(temp files kept in {tmp})", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
