"""tqcore (embedded SQLite broker) vs Celery 5.7 (private Redis): enqueue and drain rates.

Run from the repository root::

    python -m bench.embedded                 # 20,000 tasks per measurement
    python -m bench.embedded --tasks 5000
    python -m bench.embedded --quick         # 1,000 tasks, a smoke run
    python -m bench.embedded --profile       # then profile tqcore's producer and worker

For each system and each of two no-op tasks (result stored / ``ignore_result=True``):

* **enqueue**: a separate producer process sends N tasks one ``delay()`` call at a time;
  tasks/s over the loop.
* **drain**: with the N tasks queued, a 2-slot worker is started (tqcore: ``-P threads -c 2``;
  Celery: ``-P prefork -c 2``, its default pool). Rate from the first task run (each worker
  process records it) and from the worker's start, until every task has run: for tqcore, when
  ``queue_stats()`` shows nothing ready, scheduled or in flight; for Celery, when the Redis
  counter the tasks INCR reaches N (Celery acks before running, so ``LLEN celery == 0`` is not
  enough; that moment is reported too).

Every subprocess is started in its own session and killed at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent

#: The issue's targets for tqcore embedded, and reference Celery figures on this machine class.
TARGET_ENQUEUE = 3000.0
TARGET_DRAIN = 2000.0
CELERY_REF_ENQUEUE = 1800.0
CELERY_REF_DRAIN = 870.0

TASKS = {"results": "bench.noop", "noresult": "bench.noop_noresult"}
VARIANT_LABEL = {"results": "results on", "noresult": "ignore_result"}


class BenchError(RuntimeError):
    """A measurement could not be completed (the message says why)."""


@dataclass
class Measurement:
    """One system x variant: enqueue and drain figures."""

    system: str
    variant: str
    n: int
    enqueue_s: float = 0.0
    drain_first_s: float | None = None  # first task run -> all done
    drain_start_s: float | None = None  # worker process start -> all done
    startup_s: float | None = None  # worker process start -> first task run
    queue_empty_s: float | None = None  # Celery: worker start -> LLEN celery == 0
    notes: list[str] = field(default_factory=list)

    def enqueue_rate(self) -> float:
        return self.n / self.enqueue_s if self.enqueue_s else 0.0

    def drain_rate(self, from_first: bool) -> float | None:
        span = self.drain_first_s if from_first else self.drain_start_s
        return self.n / span if span else None


# -- process handling ----------------------------------------------------------------------------
class Procs:
    """The processes this run started; ``stop_all`` ends each of them (and its session) by id."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []

    def start(self, argv: list[str], *, env: dict[str, str], log: Path) -> subprocess.Popen[Any]:
        fh = open(log, "wb")  # noqa: SIM115 - closed in stop()
        try:
            proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            fh.close()  # the child holds its own descriptor
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], *, grace: float = 15.0,
             sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` (SIGTERM: warm shutdown), then SIGKILL the session if it lingers."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # The session (process group) was created for this child: prefork children live in it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.procs)):
            try:
                self.stop(proc, grace=5.0)
            except Exception as exc:  # keep stopping the others
                print(f"warning: could not stop pid {proc.pid}: {exc}", file=sys.stderr)


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


def base_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("TQ_RESULT_BACKEND", None)
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# -- producer (runs in its own process) ----------------------------------------------------------
def producer_main(system: str, task_name: str, n: int, profile_out: str | None) -> dict[str, Any]:
    """Send ``n`` tasks one ``delay()`` at a time; return the timing."""
    if system == "tq":
        from bench.apps import tq as mod
    else:
        from bench.apps import cel as mod  # type: ignore[no-redef]
    task = {"bench.noop": mod.noop, "bench.noop_noresult": mod.noop_noresult}[task_name]
    delay = task.delay
    profiler = cProfile.Profile() if profile_out else None
    last_id = None
    if profiler:
        profiler.enable()
    t0 = time.perf_counter()
    for _ in range(n):
        last_id = delay().id
    elapsed = time.perf_counter() - t0
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile_out)
    return {"elapsed": elapsed, "n": n, "last_id": last_id}


def run_producer(procs: Procs, system: str, variant: str, n: int, env: dict[str, str],
                 tmp: Path, timeout: float, profile_out: str | None = None) -> dict[str, Any]:
    log = tmp / f"producer-{system}-{variant}.log"
    out = tmp / f"producer-{system}-{variant}.json"
    argv = [sys.executable, "-m", "bench.embedded", "--role", "produce", "--system", system,
            "--task", TASKS[variant], "--tasks", str(n), "--result-file", str(out)]
    if profile_out:
        argv += ["--profile-out", profile_out]
    proc = procs.start(argv, env=env, log=log)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        procs.stop(proc, grace=2)
        raise BenchError(f"{system} producer ({variant}) did not finish {n} sends in {timeout:.0f}s"
                         f"\n--- producer log ---\n{log_tail(log)}") from None
    procs.stop(proc)
    if rc != 0 or not out.exists():
        raise BenchError(f"{system} producer ({variant}) failed (exit {rc})"
                         f"\n--- producer log ---\n{log_tail(log)}")
    return dict(json.loads(out.read_text()))


# -- tqcore --------------------------------------------------------------------------------------
def tq_pending(transport: Any) -> tuple[int, int]:
    """(ready + scheduled + in flight, dead-lettered) over every queue."""
    pending = dead = 0
    for s in transport.queue_stats():
        pending += s.depth + s.scheduled + s.in_flight
        dead += s.dead_lettered
    return pending, dead


def run_tqcore(procs: Procs, variant: str, n: int, tmp: Path, poll: float,
               py_spy_out: Path | None = None, producer_profile: str | None = None) -> Measurement:
    from tqcore import App

    tag = "profile" if (py_spy_out or producer_profile) else "run"
    db = tmp / f"tq-{variant}-{tag}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{db}"
    marks = fresh_dir(tmp / f"marks-tq-{variant}-{tag}")
    env = base_env(TQ_BROKER_URL=url, BENCH_MARK_DIR=str(marks))
    m = Measurement("tqcore", variant, n)

    res = run_producer(procs, "tq", variant, n, env, tmp, timeout=max(120.0, n / 100),
                       profile_out=producer_profile)
    m.enqueue_s = res["elapsed"]

    monitor = App("bench-monitor", broker=url, set_as_current=False)
    worker_log = tmp / f"worker-tq-{variant}-{tag}.log"
    spy: subprocess.Popen[Any] | None = None
    try:
        transport = monitor.transport
        pending, dead = tq_pending(transport)
        if pending != n:
            raise BenchError(f"tqcore ({variant}): expected {n} queued messages, broker shows "
                             f"{pending} (dead-lettered: {dead})")
        argv = [sys.executable, "-m", "tqcore", "-A", "bench.apps.tq", "worker",
                "-P", "threads", "-c", "2", "-l", "WARNING"]
        t_start = time.time()
        worker = procs.start(argv, env=env, log=worker_log)
        if py_spy_out is not None:
            spy = procs.start(["py-spy", "record", "--pid", str(worker.pid), "--rate", "250",
                               "--format", "raw", "--output", str(py_spy_out), "--nonblocking"],
                              env=base_env(), log=tmp / "py-spy.log")
        deadline = time.monotonic() + max(120.0, n / 50)
        while True:
            pending, dead = tq_pending(transport)
            if pending == 0:
                t_end = time.time()
                break
            if worker.poll() is not None:
                raise BenchError(f"tqcore worker ({variant}) exited early (code "
                                 f"{worker.returncode}) with {pending} tasks left"
                                 f"\n--- worker log ---\n{log_tail(worker_log)}")
            if time.monotonic() > deadline:
                raise BenchError(f"tqcore worker ({variant}): {pending} of {n} tasks still "
                                 f"pending after the timeout\n--- worker log ---\n"
                                 f"{log_tail(worker_log)}")
            time.sleep(poll)
        if spy is not None:
            procs.stop(spy, grace=10, sig=signal.SIGINT)  # py-spy writes its output on SIGINT
            spy = None
        procs.stop(worker)
        first = _wait_mark(marks)
        m.drain_start_s = t_end - t_start
        if first is not None:
            m.drain_first_s = t_end - first
            m.startup_s = first - t_start
        else:
            m.notes.append("no first-task mark recorded")
        if dead:
            m.notes.append(f"{dead} dead-lettered")
        if variant == "results":
            state = monitor.AsyncResult(res["last_id"]).state
            if state != "SUCCESS":
                m.notes.append(f"last task's stored state is {state}, not SUCCESS")
    finally:
        if spy is not None:
            procs.stop(spy, grace=1)
        monitor.close()
    return m


def _wait_mark(marks: Path, timeout: float = 2.0) -> float | None:
    from bench.apps._mark import earliest_mark

    deadline = time.monotonic() + timeout
    while True:
        first = earliest_mark(str(marks))
        if first is not None or time.monotonic() > deadline:
            return first
        time.sleep(0.05)


# -- Celery on Redis -----------------------------------------------------------------------------
def start_redis(procs: Procs, tmp: Path) -> tuple[str, Any]:
    import redis

    exe = shutil.which("redis-server")
    if not exe:
        raise BenchError("redis-server is not installed (apt-get install -y redis-server), "
                         "or run with --skip-celery")
    port = free_port()
    rdir = fresh_dir(tmp / "redis")
    proc = procs.start([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--dir", str(rdir), "--daemonize", "no"],
                       env=base_env(), log=tmp / "redis.log")
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 15
    while True:
        try:
            if client.ping():
                break
        except redis.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"redis-server on port {port} did not come up"
                             f"\n--- redis log ---\n{log_tail(tmp / 'redis.log')}")
        time.sleep(0.05)
    return f"redis://127.0.0.1:{port}", client


def run_celery(procs: Procs, variant: str, n: int, tmp: Path, poll: float, redis_url: str,
               client: Any) -> Measurement:
    from bench.apps.cel import COUNTER_KEY

    client.flushall()
    marks = fresh_dir(tmp / f"marks-cel-{variant}")
    env = base_env(BENCH_REDIS_URL=redis_url, BENCH_MARK_DIR=str(marks))
    m = Measurement("Celery", variant, n)

    res = run_producer(procs, "cel", variant, n, env, tmp, timeout=max(120.0, n / 100))
    m.enqueue_s = res["elapsed"]
    queued = int(client.llen("celery"))
    if queued != n:
        raise BenchError(f"Celery ({variant}): expected {n} messages in the 'celery' list, "
                         f"found {queued}")

    worker_log = tmp / f"worker-cel-{variant}.log"
    argv = [sys.executable, "-m", "celery", "-A", "bench.apps.cel", "worker", "-c", "2",
            "-P", "prefork", "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-l", "WARNING"]
    t_start = time.time()
    worker = procs.start(argv, env=env, log=worker_log)
    try:
        deadline = time.monotonic() + max(120.0, n / 50)
        t_empty = None
        while True:
            pipe = client.pipeline(transaction=False)
            pipe.get(COUNTER_KEY)
            pipe.llen("celery")
            done_raw, depth = pipe.execute()
            done = int(done_raw or 0)
            now = time.time()
            if t_empty is None and depth == 0:
                t_empty = now
            if done >= n:
                t_end = now
                break
            if worker.poll() is not None:
                raise BenchError(f"Celery worker ({variant}) exited early (code "
                                 f"{worker.returncode}) after {done} of {n} tasks"
                                 f"\n--- worker log ---\n{log_tail(worker_log)}")
            if time.monotonic() > deadline:
                raise BenchError(f"Celery worker ({variant}): only {done} of {n} tasks ran "
                                 f"before the timeout\n--- worker log ---\n{log_tail(worker_log)}")
            time.sleep(poll)
    finally:
        procs.stop(worker)
    first = _wait_mark(marks)
    m.drain_start_s = t_end - t_start
    m.queue_empty_s = t_empty - t_start if t_empty else None
    if first is not None:
        m.drain_first_s = t_end - first
        m.startup_s = first - t_start
    else:
        m.notes.append("no first-task mark recorded")
    if variant == "results":
        key = f"celery-task-meta-{res['last_id']}"
        meta = redis_db(redis_url, 1).get(key)
        if not meta or json.loads(meta).get("status") != "SUCCESS":
            m.notes.append("last task's result is missing or not SUCCESS")
    return m


def redis_db(url: str, db: int) -> Any:
    import redis

    return redis.Redis.from_url(f"{url}/{db}")


# -- report --------------------------------------------------------------------------------------
def fmt_rate(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def fmt_secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}s"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or a == 0 or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def print_table(results: dict[tuple[str, str], Measurement], n: int, poll: float) -> None:
    rows: list[tuple[str, str, str, str, str]] = []

    def get(system: str, variant: str) -> Measurement | None:
        return results.get((system, variant))

    for variant in ("results", "noresult"):
        label = VARIANT_LABEL[variant]
        tq, cel = get("tqcore", variant), get("Celery", variant)
        enq = (tq.enqueue_rate() if tq else None, cel.enqueue_rate() if cel else None)
        rows.append((f"enqueue tasks/s, 1 call at a time ({label})", fmt_rate(enq[0]),
                     fmt_rate(enq[1]), ratio(*enq),
                     f">= {TARGET_ENQUEUE:,.0f} (Celery ref {CELERY_REF_ENQUEUE:,.0f})"))
        for from_first, what in ((True, "from 1st task"), (False, "from worker start")):
            d = (tq.drain_rate(from_first) if tq else None,
                 cel.drain_rate(from_first) if cel else None)
            target = (f">= {TARGET_DRAIN:,.0f} (Celery ref {CELERY_REF_DRAIN:,.0f})"
                      if from_first else "")
            rows.append((f"drain tasks/s -c 2, {what} ({label})", fmt_rate(d[0]), fmt_rate(d[1]),
                         ratio(*d), target))
        s = (tq.startup_s if tq else None, cel.startup_s if cel else None)
        rows.append((f"worker start -> 1st task ({label})", fmt_secs(s[0]), fmt_secs(s[1]),
                     ratio(*s), ""))
    headers = ("metric", "tqcore", "Celery", "tqcore/Celery", "target (tqcore embedded)")
    widths = [max(len(r[i]) for r in [*rows, headers]) for i in range(5)]
    line = "  ".join("-" * w for w in widths)
    print()
    print(f"tqcore (SQLite embedded, -P threads -c 2) vs Celery 5.7 (Redis, -P prefork -c 2), "
          f"N = {n:,} tasks per measurement")
    print(line)
    print("  ".join(h.ljust(w) if i in (0, 4) else h.rjust(w)
                    for i, (h, w) in enumerate(zip(headers, widths, strict=True))).rstrip())
    print(line)
    for r in rows:
        print("  ".join(c.ljust(w) if i in (0, 4) else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
    print(line)
    for variant in ("results", "noresult"):
        cel = get("Celery", variant)
        if cel and cel.queue_empty_s:
            print(f"Celery ({VARIANT_LABEL[variant]}): 'celery' list empty after "
                  f"{cel.queue_empty_s:.2f}s from worker start; all {n:,} had run after "
                  f"{cel.drain_start_s:.2f}s (poll every {poll}s)")
    for m in results.values():
        for note in m.notes:
            print(f"note: {m.system} ({VARIANT_LABEL[m.variant]}): {note}")
    verdicts = []
    for variant in ("results", "noresult"):
        tq = get("tqcore", variant)
        if tq is None:
            continue
        enq, drain = tq.enqueue_rate(), tq.drain_rate(True)
        verdicts.append(f"{VARIANT_LABEL[variant]}: enqueue "
                        f"{'meets' if enq >= TARGET_ENQUEUE else 'BELOW'} target, drain "
                        f"{'meets' if drain and drain >= TARGET_DRAIN else 'BELOW'} target")
    if verdicts:
        print("tqcore vs targets -> " + "; ".join(verdicts))
    sys.stdout.flush()


# -- profiling -----------------------------------------------------------------------------------
def summarize_pyspy_raw(path: Path, top: int = 15) -> str:
    """Self % per frame (with line) and inclusive % per function from py-spy's "raw" output.

    Each line of the raw (folded) format is ``frame;frame;...;leaf count``, a frame being
    ``function (file:line)``.
    """
    if not path.exists() or not path.stat().st_size:
        return f"(py-spy wrote nothing to {path}; see py-spy.log beside it)"
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    total = 0
    for raw in path.read_text(errors="replace").splitlines():
        stack, _, count = raw.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        total += c
        frames = stack.split(";")
        self_c[frames[-1]] += c
        for func in {f.rpartition(":")[0] if f.endswith(")") else f for f in frames}:
            incl_c[func] += c
    if not total:
        return "(no samples)"
    out = [f"{total} samples of non-idle threads (250 Hz)", "  self%  frame"]
    out += [f"  {100 * c / total:5.1f}  {f}" for f, c in self_c.most_common(top)]
    out += ["  incl%  function"]
    out += [f"  {100 * c / total:5.1f}  {f})" for f, c in incl_c.most_common(top)]
    return "\n".join(out)


def run_profile(procs: Procs, n: int, tmp: Path, poll: float) -> None:
    print("\n== profiling tqcore (numbers below are skewed by the profilers) ==")
    prof = tmp / "producer.prof"
    spy_out = tmp / "worker.pyspy.txt"
    have_spy = shutil.which("py-spy") is not None
    if not have_spy:
        print("py-spy not found (pip install py-spy): profiling the producer only")
    m = run_tqcore(procs, "results", n, tmp, poll, py_spy_out=spy_out if have_spy else None,
                   producer_profile=str(prof))
    print(f"(profiled run: enqueue {m.enqueue_rate():,.0f}/s, drain "
          f"{fmt_rate(m.drain_rate(True))}/s)")
    print("\n-- producer loop (cProfile, top by own time) --")
    stats = pstats.Stats(str(prof))
    stats.sort_stats("tottime").print_stats(15)
    print("-- producer loop (cProfile, top by cumulative time) --")
    stats.sort_stats("cumulative").print_stats(20)
    if have_spy:
        print("-- worker during drain (py-spy) --")
        print(summarize_pyspy_raw(spy_out))


# -- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.embedded", description=__doc__.split("\n")[0])
    p.add_argument("--tasks", type=int, default=20000, help="tasks per measurement (20000)")
    p.add_argument("--quick", action="store_true", help="a small run (1,000 tasks)")
    p.add_argument("--poll", type=float, default=0.02, help="drain poll interval, s (0.02)")
    p.add_argument("--skip-celery", action="store_true", help="measure tqcore only")
    p.add_argument("--skip-tqcore", action="store_true", help="measure Celery only")
    p.add_argument("--profile", action="store_true",
                   help="afterwards, profile tqcore's producer (cProfile) and worker (py-spy)")
    p.add_argument("--json", metavar="FILE", help="also write the measurements to FILE")
    p.add_argument("--keep", action="store_true", help="keep the temp directory (logs, DBs)")
    # internal: the producer subprocess
    p.add_argument("--role", choices=["bench", "produce"], default="bench", help=argparse.SUPPRESS)
    p.add_argument("--system", choices=["tq", "cel"], help=argparse.SUPPRESS)
    p.add_argument("--task", help=argparse.SUPPRESS)
    p.add_argument("--result-file", help=argparse.SUPPRESS)
    p.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.role == "produce":
        res = producer_main(args.system, args.task, args.tasks, args.profile_out)
        Path(args.result_file).write_text(json.dumps(res))
        return 0

    n = 1000 if args.quick else args.tasks
    if n <= 0:
        p.error("--tasks must be positive")
    tmp = Path(tempfile.mkdtemp(prefix="tqbench-"))
    procs = Procs()
    results: dict[tuple[str, str], Measurement] = {}
    rc = 0

    def handle_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handle_term)
    try:
        if not args.skip_tqcore:
            for variant in ("results", "noresult"):
                print(f"tqcore, {VARIANT_LABEL[variant]}: {n:,} tasks ...", flush=True)
                results["tqcore", variant] = run_tqcore(procs, variant, n, tmp, args.poll)
        if not args.skip_celery:
            redis_url, client = start_redis(procs, tmp)
            print(f"private redis-server at {redis_url}", flush=True)
            try:
                for variant in ("results", "noresult"):
                    print(f"Celery, {VARIANT_LABEL[variant]}: {n:,} tasks ...", flush=True)
                    results["Celery", variant] = run_celery(procs, variant, n, tmp, args.poll,
                                                            redis_url, client)
            finally:
                client.close()
        print_table(results, n, args.poll)
        if args.json:
            Path(args.json).write_text(json.dumps(
                [{**vars(m), "enqueue_rate": m.enqueue_rate(),
                  "drain_rate_first": m.drain_rate(True), "drain_rate_start": m.drain_rate(False)}
                 for m in results.values()], indent=2))
        if args.profile and not args.skip_tqcore:
            run_profile(procs, n, tmp, args.poll)
    except BenchError as exc:
        if results:
            print_table(results, n, args.poll)
        print(f"\nerror: {exc}", file=sys.stderr)
        rc = 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        rc = 130
    finally:
        procs.stop_all()
        if args.keep or rc:
            print(f"(temp files kept in {tmp})", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
