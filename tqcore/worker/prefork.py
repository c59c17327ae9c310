"""The prefork pool: forked child processes fed over pipes, written for tqcore.

One manager thread in the worker owns every child: it hands jobs to children, reads
``done`` messages, enforces hard time limits, detects dead children at once (the pipe
closes), fails or requeues their task, replaces them, and grows, shrinks or autoscales
the pool. A job submitted while a child is idle is handed over by the submitting
(consumer) thread itself, under the same lock as a manager's turn: waking the manager
for it was a thread switch on the way of every such task.

**One job ahead.** When no child is idle, a busy child is also sent its *next* job, so
it starts it the moment its current one ends instead of idling through the manager's
turn (its wake-up, the GIL, a pipe read and write: most of a short task's cycle; a
2-child pool drains no-op tasks from Redis about a quarter faster). Fairness is kept:

- a job is sent ahead only behind a job that has run less than ``STEAL_AFTER`` (20 ms,
  :mod:`~tqcore.worker.prefork_dispatch`);
- a job waiting behind one that has run longer is *withdrawn* (see
  :class:`~tqcore.worker.child.Marks`) and handed to a child that became idle: a long
  task holds back queued work another child could run for ``STEAL_AFTER`` at most;
- revoking it, or its child leaving (task or memory limit) or dying, takes it back
  unstarted.

Acks and events of a job sent ahead: ``task-started`` goes out when the pool learns its
child started it (the previous job's ``done``), stamped with the time the child did.
Where the child settles its message (Redis), it early-acks it as it starts it: a worker
that dies while the job waits loses nothing, and a warm shutdown hands it back. Where
the parent acks (SQLite, RabbitMQ), it early-acks the job when sending it ahead, so that
an early-ack task still never runs twice: a worker killed while the job waits loses it
(early ack is at most once), and a warm shutdown lets its child run it.

A terminate (``revoke(terminate=True)``) or a hard time limit signals a child only while
the accepted mark says it has not gone on to a later job (checked under the marks' lock,
which the child takes to start one): the signal hits that task or an idle child, never
the next task."""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tqcore.exceptions import TimeLimitExceeded, TqError, WorkerLostError
from tqcore.trace import Report
from tqcore.worker.child import Marks, child_main, recv, send
from tqcore.worker.pool import Pool
from tqcore.worker.prefork_dispatch import Child, Dispatch

if TYPE_CHECKING:
    from tqcore.worker.job import Job
    from tqcore.worker.worker import Worker

logger = logging.getLogger("tqcore.worker")

_IDLE_SHRINK_AFTER = 30.0  # autoscale: an idle child above the minimum leaves after this
_MAX_REDISPATCH = 3  # a job whose child died before starting it is handed on this often

class PreforkPool(Dispatch, Pool):
    """Child processes running one task each; see the module docstring."""

    name = "prefork"
    can_terminate = True
    enforces_time_limits = True

    def __init__(self, concurrency: int, execute: Callable[[Job], None], *,
                 worker: Worker, max_tasks_per_child: int | None = None,
                 max_memory_per_child: int | None = None,
                 autoscale: tuple[int, int] | None = None) -> None:
        super().__init__(concurrency, execute)
        self.worker = worker
        self.max_tasks_per_child = max_tasks_per_child
        self.max_memory_per_child = max_memory_per_child
        self.autoscale = autoscale
        if autoscale:
            self.concurrency = max(autoscale[1], 1)
        self.children: dict[int, Child] = {}
        self.pending: collections.deque[Job] = collections.deque()
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        self._running = False
        self._dispatching = True
        self._thread: threading.Thread | None = None
        #: held by the manager for each turn, and by a submit that dispatches itself
        self._section = threading.Lock()
        self.replaced = 0
        self._seq = 0
        self._poller: select.poll | None = None
        self._polled = -1
        self._generation = 0  # bumped whenever a child comes or goes
        self._by_fd: dict[int, Child] = {}
        self._child_settles = bool(worker.app.transport.settles_from_any_process)

    # -- lifecycle ----------------------------------------------------------------
    def start(self) -> None:
        if self.worker.app.transport.distributed is False and \
                self.worker.app.transport.schemes == ("memory",):
            raise TqError("the prefork pool needs a broker its child processes can share"
                          " (memory:// is in-process only)")
        self._running = True
        for _ in range(self.concurrency):
            self._spawn()
        self._thread = threading.Thread(target=self._manage, name="tqcore-prefork", daemon=True)
        self._thread.start()

    def _spawn(self) -> None:
        parent_conn, child_conn = multiprocessing.Pipe()
        marks = Marks()
        pid = os.fork()
        if pid == 0:  # child
            try:
                parent_conn.close()
                for other in self.children.values():
                    other.conn.close()
                child_main(self.worker.app, child_conn, marks, self.max_tasks_per_child,
                           self.max_memory_per_child)
            finally:
                os._exit(1)
        child_conn.close()
        self.children[pid] = Child(pid, parent_conn, marks)
        self._generation += 1

    def stop(self, wait: bool = True, timeout: float | None = None) -> list[Job]:
        with self._section:
            with self._lock:
                self._dispatching = False
                unstarted = list(self.pending)
                self.pending.clear()
            # Early-acked jobs sent ahead are the worker's now: their children run them.
            unstarted += self._withdraw(lambda job: not job.acked)
        self._wake()
        if wait:
            deadline = None if timeout is None else time.monotonic() + timeout
            while self.active and (deadline is None or time.monotonic() < deadline):
                time.sleep(0.05)
        return unstarted

    def close(self, kill: bool = False) -> None:
        """End every child: politely when idle, SIGKILL when ``kill``."""
        self._running = False
        for child in list(self.children.values()):
            with contextlib.suppress(OSError):
                if kill or child.job is not None:
                    os.kill(child.pid, signal.SIGKILL)
                else:
                    send(child.conn, ("stop",))
        self._wake()
        if self._thread is not None:
            self._thread.join(5)
        for child in list(self.children.values()):
            self._reap(child, block=True)

    # -- pool interface -------------------------------------------------------------
    def submit(self, job: Job) -> None:
        with self._lock:
            was_empty = not self.pending
            self.pending.append(job)
        # Hand it to an idle child from this (the consumer's) thread: waking the manager
        # first cost a thread switch on the way of every task that found a child idle,
        # the whole latency of a round trip or a chain step. A busy manager dispatches it.
        if self._section.acquire(blocking=False):
            try:
                self._dispatch()
            except Exception:  # as in the manager: a broken job must not stop the consumer
                logger.exception("prefork dispatch error")
            finally:
                self._section.release()
            if not self.pending:
                return
        if was_empty:  # else a wake-up is already on its way and the manager takes all
            self._wake()

    def free_slots(self) -> int:
        idle = sum(1 for c in self.children.values() if c.job is None and not c.stopping)
        return max(0, idle - len(self.pending))

    def queued(self) -> int:
        return len(self.pending)

    def grow(self, n: int = 1) -> None:
        with self._lock:
            self.concurrency += n
        self._wake()

    def shrink(self, n: int = 1) -> None:
        with self._lock:
            self.concurrency = max(1, self.concurrency - n)
        self._wake()

    def terminate_job(self, task_id: str, signal_name: str) -> bool:
        signum = _signum(signal_name)
        self.recall([task_id])
        with self._lock:
            for child in self.children.values():
                if child.job is not None and child.job.id == task_id and child.kill_reason is None:
                    child.kill_reason = ("revoked", signal_name)
                    if child.marks.kill_if_on(child.seq, child.pid, signum):
                        return True
                    child.kill_reason = None  # it ended (the next job started): nothing to stop
        return False

    def info(self) -> dict[str, object]:
        return {"implementation": self.name, "max-concurrency": self.concurrency,
                "processes": sorted(self.children), "active": self.active,
                "max-tasks-per-child": self.max_tasks_per_child,
                "max-memory-per-child": self.max_memory_per_child,
                "replaced": self.replaced, "autoscale": self.autoscale}

    # -- manager thread --------------------------------------------------------------
    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send_bytes(b"x")

    def _manage(self) -> None:
        while self._running or self.children:
            ready = self._poll(self._turn_due())
            with self._section:
                self._manage_once(ready)

    def _manage_once(self, ready: list[int]) -> None:
        """One turn of the manager after a poll (``_section`` held: children are
        dispatched to, reaped and replaced by one thread at a time)."""
        for fd in ready:
            if fd == self._wake_r.fileno():
                with contextlib.suppress(EOFError, OSError):
                    while self._wake_r.poll():
                        self._wake_r.recv_bytes()
                continue
            child = self._by_fd.get(fd)
            if child is not None and self.children.get(child.pid) is child:
                self._read(child)
        try:
            self._enforce_limits()
            self._resize()
            self._dispatch()
        except Exception:  # the manager must survive anything a job throws at it
            logger.exception("prefork manager error")
        if not self._running and not any(c.job for c in self.children.values()):
            for child in list(self.children.values()):
                with contextlib.suppress(OSError):
                    send(child.conn, ("stop",))
                self._reap(child, block=True)

    def _poll(self, timeout: float) -> list[int]:
        """Readable fds among the children's pipes and the wake pipe. One poll object
        is kept while the set of children stays the same: building a selector per
        call (``multiprocessing.connection.wait``) cost more than the task itself."""
        if self._poller is None or self._polled != self._generation:
            self._poller, self._by_fd = select.poll(), {}
            self._poller.register(self._wake_r.fileno(), select.POLLIN)
            for child in list(self.children.values()):
                fd = child.conn.fileno()
                self._by_fd[fd] = child
                self._poller.register(fd, select.POLLIN)
            self._polled = self._generation
        try:
            return [fd for fd, _ in self._poller.poll(timeout * 1000)]
        except OSError:  # EINTR and the like: the loop comes back at once
            return []

    def _read(self, child: Child) -> None:
        # One message per readiness: the pipe stays readable (level-triggered) while
        # more are queued, so the next poll returns at once.
        try:
            self._on_message(child, recv(child.conn))
        except (EOFError, OSError):
            self._on_death(child)

    def _on_message(self, child: Child, msg: tuple[Any, ...]) -> None:
        job = child.job
        if job is None or msg[1] != job.id:
            return
        if msg[0] == "done":
            rep = Report(*msg[2])
            if len(msg) > 4 and msg[4]:
                job.delivery.settled = True  # the child acked (or requeued) it
            with self._lock:
                child.job = None
                child.idle_since = time.monotonic()
                child.stopping = child.stopping or (len(msg) > 3 and bool(msg[3]))
                self.active -= 1
                ahead, child.next = child.next, None
                if ahead is not None and not child.stopping:
                    # The child has started the job sent ahead (or is about to).
                    child.job, child.seq, child.hard_limit = ahead
                    child.started, child.kill_reason = time.monotonic(), None
                elif ahead is not None:  # leaving: it will not read that job
                    self.active -= 1
                    self.pending.appendleft(ahead[0])
            self.worker.complete(job, rep)
            if child.job is not None:
                # Stamped when the child started it, which may be well before this (a
                # short task may even have ended): its own events come after that.
                self.worker.accept(child.job, ack=not self._child_settles,
                                   at=child.marks.started_at(child.seq))

    def _on_death(self, child: Child) -> None:
        self._reap(child, block=False)
        job, reason, ahead = child.job, child.kill_reason, child.next
        with self._lock:
            if job is not None:
                self.active -= 1
            child.job = child.next = None
            if ahead is not None:
                # Never started: the previous job's ``done`` (read before the pipe's
                # end) would have made it the current job.
                self.active -= 1
                self.pending.appendleft(ahead[0])
        if job is None:
            return
        if not child.accepted and reason is None and job.redispatched < _MAX_REDISPATCH:
            # The child died before starting the body (it was exiting, or broke while
            # receiving): the task never ran, so give it to another child.
            job.redispatched += 1
            with self._lock:
                self.pending.appendleft(job)
            return
        if reason is not None and reason[0] == "revoked":
            self.worker.job_terminated(job, reason[1])
        elif reason is not None and reason[0] == "time-limit":
            self.worker.job_failed_in_parent(job, TimeLimitExceeded(reason[1]))
        else:
            self.worker.job_lost(job, WorkerLostError(
                f"worker process {child.pid} exited unexpectedly while running the task"))

    def _reap(self, child: Child, block: bool) -> None:
        self.children.pop(child.pid, None)
        self._generation += 1
        with contextlib.suppress(OSError):
            child.conn.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child.pid, 0 if block else os.WNOHANG)
        if self._running:
            self.replaced += 1

    def _enforce_limits(self) -> None:
        now = time.monotonic()
        for child in list(self.children.values()):
            if child.job is not None and child.hard_limit and child.kill_reason is None \
                    and now - child.started > child.hard_limit:
                child.kill_reason = ("time-limit", f"TimeLimitExceeded({child.hard_limit})")
                if not child.marks.kill_if_on(child.seq, child.pid, signal.SIGKILL):
                    child.kill_reason = None  # it just ended: its done is on its way
                    continue
                logger.error("Task %s[%s] hard time limit (%ss) exceeded: killed process %d",
                             child.job.name, child.job.id, child.hard_limit, child.pid)

    def _resize(self) -> None:
        if not self._running:
            return
        if self.autoscale:
            high, low = self.autoscale
            busy = sum(1 for c in self.children.values() if c.job is not None)
            # Jobs sent ahead wait too: a new child takes them once they wait long.
            waiting = len(self.pending) + sum(1 for c in self.children.values() if c.next)
            if waiting and busy >= self.concurrency and self.concurrency < high:
                self.concurrency = min(high, self.concurrency + waiting)
            elif not waiting and self.concurrency > low:
                now = time.monotonic()
                if any(c.job is None and now - c.idle_since > _IDLE_SHRINK_AFTER
                       for c in self.children.values()):
                    self.concurrency -= 1
        live = [c for c in self.children.values() if not c.stopping]
        for _ in range(self.concurrency - len(live)):
            self._spawn()
        extra = len(live) - self.concurrency
        for child in live:
            if extra <= 0:
                break
            if child.job is None:
                child.stopping = True
                with contextlib.suppress(OSError):
                    send(child.conn, ("stop",))
                extra -= 1

def _signum(name: str | int) -> int:
    if isinstance(name, int):
        return name
    name = name.upper()
    return int(getattr(signal, name if name.startswith("SIG") else f"SIG{name}", signal.SIGTERM))
