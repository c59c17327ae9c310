"""A cluster of real worker processes on one broker (a SQLite file, or a private Redis or
RabbitMQ server from :mod:`.brokers`), and the chaos driver.

:class:`Cluster` starts ``python3 -m tqcore -A bench.reliability.app worker -P prefork``
processes (each in its own session, log in a file), injects faults with a seeded
RNG and logs every one (monotonic and wall time), and in :meth:`Cluster.close`
SIGKILLs every process it started and every pool child it saw — by pid, checked
against the process's creation time, never by name or process group.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from bench.reliability import ledger

REPO = Path(__file__).resolve().parents[2]
APP = "bench.reliability.app"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy; raise TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclasses.dataclass
class Fault:
    """One injected fault."""

    kind: str
    target: str
    pid: int
    mono: float
    wall: float
    note: str = ""


class WorkerProc:
    """One ``tqcore worker`` process."""

    def __init__(self, cluster: Cluster, name: str, args: list[str]) -> None:
        self.name = name
        self.log = cluster.dir / f"{name}.log"
        cmd = [sys.executable, "-m", "tqcore", "-A", APP, "worker", *args]
        with self.log.open("ab") as log:
            log.write(f"===== {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=cluster.env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        self.pid = self.proc.pid
        self.started = time.monotonic()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def children(self) -> list[psutil.Process]:
        """The pool's child processes (empty once the worker is gone)."""
        try:
            return psutil.Process(self.pid).children()
        except psutil.Error:
            return []


class Cluster:
    """A scenario's broker, ledger, workers and chaos log.

    Args:
        base: an empty directory for this scenario.
        seed: the chaos RNG seed.
        lease: ``--lease`` of the workers.
        max_deliveries: ``broker_max_deliveries`` of workers and producer.
        broker_url: a server broker (Redis, RabbitMQ); default: the SQLite file
            ``tq.db``, which then holds the results too. With a server broker the
            results go to the SQLite file, so that broker faults do not touch them.
        server: the broker server (:mod:`.brokers`), closed with the cluster.
    """

    def __init__(self, base: Path, seed: int, *, lease: float = 2.0,
                 max_deliveries: int = 5, broker_url: str | None = None,
                 server: Any = None) -> None:
        self.dir = base
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ledger_dir = base / "ledger"
        self.ledger_dir.mkdir(exist_ok=True)
        self.db_path = base / "tq.db"
        self.backend_url = f"sqlite:///{self.db_path}"  # absolute path: sqlite:////tmp/...
        self.url = broker_url or self.backend_url
        self.server = server
        self.rng = random.Random(seed)
        self.seed = seed
        self.lease = lease
        self.faults: list[Fault] = []
        self.workers: list[WorkerProc] = []
        self.helpers: list[subprocess.Popen[bytes]] = []
        self._view: ledger.LedgerView | None = None
        self._seen: dict[int, float] = {}  # pid -> create_time of every process we started
        self.env = dict(os.environ)
        pythonpath = [str(REPO)] + ([self.env["PYTHONPATH"]] if self.env.get("PYTHONPATH")
                                    else [])
        self.env.update({"TQ_BROKER_URL": self.url, "TQ_RESULT_BACKEND": self.backend_url,
                         "REL_LEDGER_DIR": str(self.ledger_dir), "PYTHONUNBUFFERED": "1",
                         "REL_MAX_DELIVERIES": str(max_deliveries),
                         "PYTHONPATH": os.pathsep.join(pythonpath)})
        self.env.pop("TQ_APP", None)
        from bench.reliability.app import app

        app.close()
        app.conf.broker_url = self.url
        app.conf.result_backend = self.backend_url
        app.conf.broker_max_deliveries = max_deliveries
        self.app = app

    # -- producer ------------------------------------------------------------------
    def send(self, task: Any, *args: Any, kind: str = "task", **options: Any) -> Any:
        """``apply_async`` and record the id in the ledger once it returned."""
        res = task.apply_async(args, **options)
        ledger.record_enqueued(self.ledger_dir, res.id, kind)
        return res

    def record(self, task_id: str, kind: str) -> None:
        """Record an id the broker accepted (canvas members, whose ids the caller learns)."""
        ledger.record_enqueued(self.ledger_dir, task_id, kind)

    def send_many(self, task: Any, arglist: list[tuple[Any, ...]], kind: str = "task",
                  **options: Any) -> list[Any]:
        """Send a batch in one broker round trip; ids recorded after it returned."""
        with self.app.producer_batch():
            results = [task.apply_async(args, **options) for args in arglist]
        for res in results:
            ledger.record_enqueued(self.ledger_dir, res.id, kind)
        return results

    def view(self) -> ledger.LedgerView:
        """The ledger, brought up to date (one view per cluster, read incrementally)."""
        if self._view is None:
            self._view = ledger.LedgerView(self.ledger_dir)
            return self._view
        return self._view.refresh()

    def stats(self, queue: str = "celery") -> Any:
        (s,) = self.app.transport.queue_stats([queue])
        return s

    def dead_ids(self, queue: str = "celery") -> set[str]:
        return {d.message_id for d in self.app.transport.dead_letters(queue, limit=100_000)
                if d.message_id}

    def drained(self, queue: str = "celery") -> bool:
        s = self.stats(queue)
        return (s.depth, s.scheduled, s.in_flight) == (0, 0, 0)

    # -- workers -------------------------------------------------------------------
    def start_worker(self, name: str | None = None, *, concurrency: int = 2,
                     prefetch: int | None = None, lease: float | None = None,
                     extra: list[str] | None = None, wait: bool = True) -> WorkerProc:
        """Start a prefork worker; by default wait until it registered."""
        name = name or f"w{len(self.workers) + 1}"
        args = ["-P", "prefork", "-c", str(concurrency), "-n", f"{name}@%h", "-l", "info",
                "--lease", str(lease or self.lease)]
        if prefetch is not None:
            args += ["--prefetch-multiplier", str(prefetch)]
        w = WorkerProc(self, name, args + list(extra or []))
        self.workers.append(w)
        self._remember(w.pid)
        if wait:
            self.wait_registered(w)
        return w

    def wait_registered(self, w: WorkerProc, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if not w.alive():
                raise RuntimeError(f"worker {w.name} exited with {w.proc.returncode}")
            for c in w.children():
                self._remember(c.pid)
            return any(info.get("pid") == w.pid
                       for info in self.app.transport.list_workers().values())

        wait_for(ready, timeout, f"worker {w.name} to register")

    def live_workers(self) -> list[WorkerProc]:
        return [w for w in self.workers if w.alive()]

    def start_helper(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        """Start ``python -m bench.reliability.procs ARGS`` (a producer or a reader)."""
        log = (self.dir / log_name).open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "bench.reliability.procs", *args],
                                cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.helpers.append(proc)
        self._remember(proc.pid)
        return proc

    # -- faults --------------------------------------------------------------------
    def _fault(self, kind: str, target: str, pid: int, note: str = "") -> Fault:
        f = Fault(kind, target, pid, time.monotonic(), time.time(), note)
        self.faults.append(f)
        return f

    def fault(self, kind: str, target: str, pid: int = 0, note: str = "") -> Fault:
        """Log a fault injected outside this class (a broker killed, frozen, reset)."""
        return self._fault(kind, target, pid, note)

    def kill_worker(self, w: WorkerProc) -> Fault:
        """SIGKILL the worker's main process only (its pool children are orphaned and
        finish or die on their own; :meth:`close` reaps any that are left)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(w.pid, signal.SIGSTOP)  # no fork between the snapshot and the kill
        for c in w.children():
            self._remember(c.pid)
        fault = self._fault("SIGKILL-main", w.name, w.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(w.pid, signal.SIGKILL)
        w.proc.wait(10)
        return fault

    def kill_child(self, w: WorkerProc, busy_pids: set[int] | None = None) -> Fault | None:
        """SIGKILL one pool child of ``w`` chosen by the RNG (among ``busy_pids`` if given)."""
        kids = sorted(c.pid for c in w.children())
        if busy_pids is not None:
            kids = [p for p in kids if p in busy_pids] or kids
        if not kids:
            return None
        pid = self.rng.choice(kids)
        self._remember(pid)
        fault = self._fault("SIGKILL-child", w.name, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return fault

    def term_worker(self, w: WorkerProc) -> Fault:
        fault = self._fault("SIGTERM", w.name, w.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(w.pid, signal.SIGTERM)
        return fault

    def stop_worker(self, w: WorkerProc, timeout: float = 30.0) -> None:
        """Warm shutdown, SIGKILL of its session if it does not exit in time."""
        if w.alive():
            w.proc.send_signal(signal.SIGTERM)
            try:
                w.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_tree(w)
                w.proc.wait(10)

    # -- teardown ------------------------------------------------------------------
    def _remember(self, pid: int) -> None:
        if pid not in self._seen:
            with contextlib.suppress(psutil.Error):
                self._seen[pid] = psutil.Process(pid).create_time()

    def _kill_tree(self, w: WorkerProc) -> None:
        """SIGKILL a live worker and its children: stopped first, so it cannot fork a
        replacement child between the snapshot of its children and the kill."""
        if not w.alive():  # not reaped yet: the pid is still ours
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(w.pid, signal.SIGSTOP)
        for c in w.children():
            self._remember(c.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(w.pid, signal.SIGKILL)

    def close(self) -> None:
        """SIGKILL everything this cluster started (workers, orphaned children, helpers)."""
        for w in self.workers:
            self._kill_tree(w)
        for h in self.helpers:
            if h.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    h.kill()
        for pid, created in self._seen.items():
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if abs(p.create_time() - created) < 0.01:  # the same process, not a reused pid
                    p.kill()
        for proc in [w.proc for w in self.workers] + self.helpers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        self.app.close()
        ledger.close_files()
        if self.server is not None:
            self.server.close()

    def log_grep(self, needle: str) -> list[str]:
        """Lines containing ``needle`` in every log of this scenario."""
        hits = []
        for path in sorted(self.dir.glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if needle in line:
                    hits.append(f"{path.name}: {line}")
        return hits
