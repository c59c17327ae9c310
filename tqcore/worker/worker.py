"""The worker: consumer loop, pool, lease renewal, registry heartbeat and shutdown.

Threads of a worker process:

* the **consumer** (the caller of :meth:`Worker.run`) claims messages while the
  worker holds fewer than its prefetch limit, decodes and checks them (malformed →
  dead letter, unknown task → dead letter + FAILURE, revoked or expired → REVOKED),
  holds rate-limited ones until their token, and hands the rest to the pool;
* the **supervisor** renews the lease of every held message every third of the
  lease, refreshes the worker's registry entry, and syncs persisted revokes; it is
  never blocked by a task, so a long task keeps its lease;
* the **pool** runs task bodies (see :mod:`tqcore.worker.pool`).

Early ack (the default) acks right before the body runs; ``acks_late`` acks after.
Shutdown is warm by default: claiming stops, held-but-unstarted messages go back to
the queue at once (not after a lease), running tasks finish, then the worker leaves
the registry. A cold shutdown also hands running ``acks_late`` messages back.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from tqcore import states
from tqcore.exceptions import DecodeError, TqError, TransportError
from tqcore.message import decode_task
from tqcore.trace import on_chord_part_return, trace_task
from tqcore.worker.job import Job
from tqcore.worker.pool import Pool, pool_class
from tqcore.worker.ratelimit import TokenBucket, parse_rate

if TYPE_CHECKING:
    from tqcore.app import App
    from tqcore.transports.base import Delivery

logger = logging.getLogger("tqcore.worker")

HEARTBEAT_INTERVAL = 2.0
REVOKE_SYNC_INTERVAL = 0.5
CLEANUP_INTERVAL = 600.0


def expand_hostname(name: str | None) -> str:
    """Expand ``%h`` (host), ``%n`` (name part) and ``%d`` (domain) like Celery's ``-n``."""
    host = socket.gethostname()
    name = name or "tqcore@%h"
    short, _, domain = host.partition(".")
    node = name.split("@", 1)[0] if "@" in name else name
    return (name.replace("%h", host).replace("%n", short).replace("%d", domain)
            .replace("%i", str(os.getpid())).replace("%N", node))


class Worker:
    """A worker serving ``queues`` of ``app``.

    Args:
        app: the app whose tasks it runs.
        hostname: node name (``name@%h``).
        queues: queue names (default: ``task_default_queue``).
        concurrency: pool slots (default: CPU count).
        pool: ``threads`` or ``solo`` (``prefork`` plugs in through the same interface).
        prefetch_multiplier: messages held per slot (``worker_prefetch_multiplier``).
        lease: seconds a claim lasts unless renewed (``broker_lease_seconds``).
    """

    def __init__(self, app: App, *, hostname: str | None = None, queues: list[str] | None = None,
                 concurrency: int | None = None, pool: str = "threads",
                 prefetch_multiplier: int | None = None, lease: float | None = None) -> None:
        self.app = app
        self.hostname = expand_hostname(hostname)
        self.queues = list(queues or [app.conf.task_default_queue])
        self.concurrency = int(concurrency or app.conf.worker_concurrency or os.cpu_count() or 1)
        multiplier = app.conf.worker_prefetch_multiplier if prefetch_multiplier is None \
            else prefetch_multiplier
        self.prefetch_multiplier = int(multiplier)
        self.lease = float(lease or app.conf.broker_lease_seconds)
        self.pool_name = pool
        self.pool: Pool = pool_class(pool)(self.concurrency, self._execute)
        self.transport = app.transport
        self.backend = app.backend
        self.max_size = int(app.conf.task_message_max_size)
        self.max_depth = int(app.conf.task_message_max_depth)
        self.buckets: dict[str, TokenBucket | None] = {}
        self.revoked: set[str] = set()
        self._revoked_stamp = 0.0
        self.processed: dict[str, int] = {}
        self.held: dict[int, Job] = {}  # id(job) -> job: every job not yet settled
        self._held_lock = threading.Condition()
        self._timers: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._cold = False
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.started_at = time.time()

    # -- public ------------------------------------------------------------------
    @property
    def prefetch_limit(self) -> int:
        """How many messages the worker holds at most (0 multiplier: 1,000)."""
        if self.prefetch_multiplier <= 0:
            return 1000
        return max(1, self.prefetch_multiplier * self.pool.concurrency)

    def run(self) -> None:
        """Serve until :meth:`stop` is called (blocks the calling thread)."""
        for q in self.queues:
            self.transport.declare_queue(q)
        existing = self.transport.list_workers()
        if self.hostname in existing and existing[self.hostname].get("pid") != os.getpid():
            logger.warning("a live worker named %s is already registered; use -n to name"
                           " this one differently", self.hostname)
        self._register()
        self._sync_revokes(initial=True)
        self.pool.start()
        self._supervisor = threading.Thread(target=self._supervise, name="tqcore-supervisor",
                                            daemon=True)
        self._supervisor.start()
        self._warn_unenforced_limits()
        logger.info("%s ready: queues=%s pool=%s concurrency=%d broker=%s", self.hostname,
                    ",".join(self.queues), self.pool_name, self.concurrency,
                    self.transport.display_url)
        self._ready.set()
        try:
            self._consume()
        finally:
            self._shutdown()

    def _warn_unenforced_limits(self) -> None:
        """Threads cannot be killed: say so instead of silently ignoring time limits."""
        if getattr(self.pool, "enforces_time_limits", False):
            return
        limited = sorted(name for name, task in self.app.tasks.items()
                         if task.time_limit or task.soft_time_limit)
        if self.app.conf.task_time_limit or self.app.conf.task_soft_time_limit:
            limited = ["(all tasks: task_time_limit)"]
        if limited:
            logger.warning("the %s pool does not enforce time limits (set on %s); use a"
                           " process pool for them", self.pool_name, ", ".join(limited[:5]))

    def stop(self, cold: bool = False) -> None:
        """Ask the worker to stop: warm (finish running tasks) or cold (hand them back)."""
        self._cold = self._cold or cold
        self._stop.set()
        with self._held_lock:
            self._held_lock.notify_all()

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Wait until the worker consumes; returns False on timeout."""
        return self._ready.wait(timeout)

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Wait until the worker has shut down."""
        return self._stopped.wait(timeout)

    # -- consumer ------------------------------------------------------------------
    def _consume(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            self._release_due_timers()
            with self._held_lock:
                capacity = self.prefetch_limit - len(self.held)
                if capacity <= 0:
                    self._held_lock.wait(0.2)
                    continue
            wait = 0.5
            if self._timers:
                wait = max(0.0, min(wait, self._timers[0][0] - time.monotonic()))
            try:
                deliveries = self.transport.claim(self.queues, consumer=self.hostname,
                                                  limit=capacity, lease=self.lease, timeout=wait)
                backoff = 0.1
            except TransportError as exc:
                logger.error("broker error while claiming: %s (retrying in %.1fs)", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for delivery in deliveries:
                try:
                    self._on_delivery(delivery)
                except TqError as exc:
                    logger.error("could not handle message %r: %s", delivery, exc)

    def _on_delivery(self, delivery: Delivery) -> None:
        try:
            msg = decode_task(delivery.payload, max_size=self.max_size, max_depth=self.max_depth)
        except DecodeError as exc:
            logger.error("malformed message %r dead-lettered: %s", delivery, exc)
            delivery.nack(f"malformed message: {exc}")
            return
        task = self.app.tasks.get(msg.name)
        if task is None:
            logger.error("Received unregistered task of type %r [%s]: dead-lettered",
                         msg.name[:200], msg.id)
            delivery.nack(f"unknown task {msg.name[:200]!r}")
            from tqcore.exceptions import NotRegistered

            self._store_quietly(msg.id, NotRegistered(msg.name), states.FAILURE)
            return
        job = Job(delivery, msg, task, self.hostname)
        logger.info("Task %s[%s] received", job.name, job.id)
        with self._held_lock:
            self.held[id(job)] = job
        if self._discard_if_dead(job):
            return
        now = time.time()
        if job.eta is not None and job.eta > now + 0.001:
            # A producer on another clock delivered it early: wait broker-side, not here.
            self._finish(job, lambda: delivery.requeue(count_attempt=False, delay=job.eta - now))
            return
        self._dispatch(job)

    def _dispatch(self, job: Job) -> None:
        bucket = self._bucket(job)
        if bucket is not None:
            wait = bucket.take()
            if wait > 0:
                heapq.heappush(self._timers, (time.monotonic() + wait, next(self._seq), job))
                return
        self.pool.submit(job)

    def _release_due_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, job = heapq.heappop(self._timers)
            self._dispatch(job)

    def _bucket(self, job: Job) -> TokenBucket | None:
        name = job.name
        if name not in self.buckets:
            rate = parse_rate(job.task.rate_limit or self.app.conf.task_default_rate_limit)
            self.buckets[name] = TokenBucket(rate) if rate else None
        return self.buckets[name]

    def set_rate_limit(self, task_name: str, rate: str | None) -> None:
        """Change a task type's rate limit on this worker (``None`` removes it)."""
        value = parse_rate(rate)
        self.buckets[task_name] = TokenBucket(value) if value else None

    def _discard_if_dead(self, job: Job) -> bool:
        """Revoked or expired jobs are acked and recorded REVOKED instead of running."""
        reason = None
        if job.id in self.revoked:
            reason = "revoked"
        elif job.expires is not None and job.expires < time.time():
            reason = "expired"
        if reason is None:
            return False
        logger.info("Discarding %s task %s[%s]", reason, job.name, job.id)
        self._finish(job, job.delivery.ack)
        self._store_quietly(job.id, None, states.REVOKED, job, reason)
        return True

    def _store_quietly(self, task_id: str, value: Any, state: str, job: Job | None = None,
                       reason: str = "") -> None:
        try:
            if state == states.REVOKED:
                self.backend.mark_as_revoked(task_id, reason, job.request if job else None)
                if job is not None and job.request.chord:
                    from tqcore.exceptions import TaskRevokedError

                    on_chord_part_return(self.app, job.request, states.REVOKED,
                                         TaskRevokedError(reason))
            else:
                self.backend.store_result(task_id, value, state)
        except Exception:
            logger.exception("could not record %s for task %s", state, task_id)

    # -- execution (pool slots) ------------------------------------------------------
    def _execute(self, job: Job) -> None:
        delivery = job.delivery
        if self._discard_if_dead(job):
            return
        job.started = time.time()
        try:
            if not job.acks_late:
                delivery.ack()
            outcome = trace_task(self.app, job.task, job.request)
        except Exception:
            logger.exception("Task %s[%s] could not be run", job.name, job.id)
            self._finish(job, delivery.ack)
            return
        self.processed[job.name] = self.processed.get(job.name, 0) + 1
        if outcome.state == states.REJECTED:
            if outcome.requeue:
                self._finish(job, delivery.requeue)
            else:
                self._finish(job, lambda: delivery.nack(f"rejected by task: {outcome.retval}"))
        else:
            self._finish(job, delivery.ack)

    def _finish(self, job: Job, settle: Any) -> None:
        try:
            settle()
        except TransportError as exc:
            # The message stays leased in the broker and comes back after the lease.
            logger.error("could not settle %r: %s", job.delivery, exc)
        finally:
            with self._held_lock:
                self.held.pop(id(job), None)
                self._held_lock.notify_all()

    # -- supervisor ----------------------------------------------------------------
    def _supervise(self) -> None:
        renew_every = self.lease / 3
        next_renew = next_beat = next_revoke = time.monotonic()
        next_cleanup = time.monotonic() + 5.0
        while not self._stopped.is_set():
            now = time.monotonic()
            try:
                if now >= next_renew:
                    with self._held_lock:
                        deliveries = [j.delivery for j in self.held.values()]
                    if deliveries:
                        self.transport.renew(deliveries, self.lease)
                    next_renew = now + renew_every
                if now >= next_beat and not self._stop.is_set():
                    self._register()
                    next_beat = now + HEARTBEAT_INTERVAL
                if now >= next_revoke:
                    self._sync_revokes()
                    next_revoke = now + REVOKE_SYNC_INTERVAL
                if now >= next_cleanup:
                    self.backend.cleanup()
                    next_cleanup = now + CLEANUP_INTERVAL
            except TqError as exc:
                logger.error("supervisor: %s", exc)
            self._stopped.wait(min(0.25, renew_every))

    def _register(self) -> None:
        self.transport.register_worker(self.hostname, self.registry_info(),
                                       ttl=HEARTBEAT_INTERVAL * 3)

    def registry_info(self) -> dict[str, Any]:
        """What the worker registers about itself (who, where, serving what)."""
        return {"hostname": self.hostname, "pid": os.getpid(), "queues": self.queues,
                "pool": self.pool_name, "concurrency": self.pool.concurrency,
                "started": self.started_at, "active": self.pool.active,
                "processed": sum(self.processed.values()),
                "tasks": sorted(n for n in self.app.tasks if not n.startswith("celery."))}

    def _sync_revokes(self, initial: bool = False) -> None:
        since = 0.0 if initial else self._revoked_stamp
        ids, newest = self.backend.revoked_since(since)
        self.revoked |= ids
        self._revoked_stamp = newest

    # -- shutdown --------------------------------------------------------------------
    def _shutdown(self) -> None:
        mode = "cold" if self._cold else "warm"
        logger.info("%s: %s shutdown", self.hostname, mode)
        unstarted = self.pool.stop(wait=False)
        unstarted += [job for _, _, job in self._timers]
        self._timers.clear()
        for job in unstarted:
            self._finish(job, lambda j=job: j.delivery.requeue(count_attempt=False))
        if not self._cold:
            with self._held_lock:
                while self.held and not self._cold:
                    self._held_lock.wait(0.2)
        with self._held_lock:
            leftovers = list(self.held.values())
        for job in leftovers:  # cold: running acks_late messages go back now
            if job.acks_late and not job.delivery.settled:
                self._finish(job, job.delivery.requeue)
        self._stopped.set()
        try:
            self.transport.unregister_worker(self.hostname)
        except TqError as exc:
            logger.error("could not unregister: %s", exc)
        logger.info("%s: stopped", self.hostname)
