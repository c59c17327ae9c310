"""The worker: consumer loop, pool, lease renewal, registry heartbeat and shutdown.

Threads of a worker process:

* the **consumer** (the caller of :meth:`Worker.run`) claims messages while the
  worker holds fewer unacknowledged ones than its prefetch limit (as RabbitMQ counts
  Celery's prefetch: an early-acked running task is outside it; a solo worker's
  limit is sized by ``-c`` as Celery's is), decodes and checks them (malformed →
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
import random
import socket
import threading
import time
from typing import TYPE_CHECKING

from tqcore import states
from tqcore.events.dispatcher import EventDispatcher
from tqcore.exceptions import DecodeError, TqError, TransportError
from tqcore.message import decode_task
from tqcore.signing import SignatureError
from tqcore.trace import report_of, trace_task
from tqcore.transports.base import Delivery
from tqcore.worker.control import Panel, serve_mailbox
from tqcore.worker.job import Job
from tqcore.worker.outcomes import JobOutcomes
from tqcore.worker.pool import Pool, pool_class
from tqcore.worker.ratelimit import TokenBucket, parse_rate
from tqcore.worker.supervisor import Supervisor

if TYPE_CHECKING:
    from tqcore.app import App
    from tqcore.transports.base import Subscription

logger = logging.getLogger("tqcore.worker")



def _int(value: object) -> int:
    """``value`` as an int for an event field; 0 when a foreign message holds garbage."""
    try:
        return int(value or 0)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0


def expand_hostname(name: str | None) -> str:
    """Expand ``%h`` (host), ``%n`` (name part) and ``%d`` (domain) like Celery's ``-n``."""
    host = socket.gethostname()
    name = name or "tqcore@%h"
    short, _, domain = host.partition(".")
    node = name.split("@", 1)[0] if "@" in name else name
    return (name.replace("%h", host).replace("%n", short).replace("%d", domain)
            .replace("%i", str(os.getpid())).replace("%N", node))


class Worker(JobOutcomes):
    """A worker serving ``queues`` of ``app``.

    Args:
        app: the app whose tasks it runs.
        hostname: node name (``name@%h``).
        queues: queue names (default: ``task_default_queue``).
        concurrency: pool slots (default: CPU count).
        pool: ``threads`` or ``solo`` (``prefork`` plugs in through the same interface).
        prefetch_multiplier: unacknowledged messages held per slot
            (``worker_prefetch_multiplier``).
        lease: seconds a claim lasts unless renewed (``broker_lease_seconds``).
    """

    def __init__(self, app: App, *, hostname: str | None = None, queues: list[str] | None = None,
                 concurrency: int | None = None, pool: str = "threads",
                 prefetch_multiplier: int | None = None, lease: float | None = None,
                 without_control: frozenset[str] | set[str] = frozenset(),
                 task_events: bool | None = None, max_tasks_per_child: int | None = None,
                 max_memory_per_child: int | None = None,
                 autoscale: tuple[int, int] | None = None,
                 soft_shutdown_timeout: float | None = None) -> None:
        self.app = app
        self.hostname = expand_hostname(hostname)
        self.queues = list(queues or [app.conf.task_default_queue])
        self.concurrency = int(concurrency or app.conf.worker_concurrency or os.cpu_count() or 1)
        multiplier = app.conf.worker_prefetch_multiplier if prefetch_multiplier is None \
            else prefetch_multiplier
        self.prefetch_multiplier = int(multiplier)
        self.lease = float(lease or app.conf.broker_lease_seconds)
        self.pool_name = pool
        self.soft_shutdown_timeout = soft_shutdown_timeout
        if pool == "prefork":
            from tqcore.worker.prefork import PreforkPool

            self.pool: Pool = PreforkPool(
                self.concurrency, self._execute, worker=self,
                max_tasks_per_child=max_tasks_per_child or app.conf.worker_max_tasks_per_child,
                max_memory_per_child=max_memory_per_child
                or app.conf.worker_max_memory_per_child, autoscale=autoscale)
        else:
            self.pool = pool_class(pool)(self.concurrency, self._execute)
        self.transport = app.transport
        self.backend = app.backend
        self.max_size = int(app.conf.task_message_max_size)
        self.max_depth = int(app.conf.task_message_max_depth)
        self.buckets: dict[str, TokenBucket | None] = {}
        self.time_limits: dict[str, tuple[float | None, float | None]] = {}
        self.events = EventDispatcher(
            self.transport, self.hostname,
            enabled=app.conf.worker_send_task_events if task_events is None else task_events)
        self.panel = Panel(self, frozenset(without_control))
        self.revoked: set[str] = set()
        self.processed: dict[str, int] = {}
        self.dedupe = bool(app.conf.get("worker_deduplicate_successful_tasks"))
        self.succeeded: dict[str, None] = {}
        self.held: dict[int, Job] = {}  # id(job) -> job: every job not yet settled
        # Held jobs acked early and started: outside the prefetch window, which counts
        # unacknowledged messages, as RabbitMQ's prefetch count does for Celery.
        self._acked_held = 0
        self._held_lock = threading.Condition()
        self.timers: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()
        self.stopping = threading.Event()
        self._cold = False
        self._ready = threading.Event()
        self.stopped = threading.Event()
        self.supervisor = Supervisor(self)
        self.events.on_full = self.supervisor.wake
        self.started_at = time.time()

    # -- public ------------------------------------------------------------------
    @property
    def prefetch_limit(self) -> int:
        """How many unacknowledged messages the worker holds at most (0 multiplier:
        1,000); early-acked running tasks come on top."""
        if self.prefetch_multiplier <= 0:
            return 1000
        return max(1, self.prefetch_multiplier * self.pool.prefetch_slots)

    def _connect(self) -> Subscription | None:
        """Declare queues, subscribe to control, register: retried (with jittered,
        capped backoff) while the broker is unreachable, as a worker started before its
        broker must wait for it rather than exit. None if stopped meanwhile."""
        backoff = 1.0
        while True:
            try:
                for q in self.queues:
                    self.transport.declare_queue(q)
                existing = self.transport.list_workers()
                if existing.get(self.hostname, {}).get("pid") not in (None, os.getpid()):
                    logger.warning("a live worker named %s is already registered; use -n to"
                                   " name this one differently", self.hostname)
                # Subscribe to control before announcing ourselves, so a command sent as
                # soon as the worker is visible (registry, worker-online) is not missed.
                mailbox = self.transport.subscribe_control(self.hostname)
                self.supervisor.register()
                self.supervisor.sync_revokes(initial=True)
                return mailbox
            except TransportError as exc:
                wait = backoff * random.uniform(0.5, 1.0)
                logger.error("cannot reach the broker: %s (retrying in %.1fs)", exc, wait)
                if self.stopping.wait(wait):
                    return None
                backoff = min(backoff * 2, 30.0)

    def run(self) -> None:
        """Serve until :meth:`stop` is called (blocks the calling thread)."""
        self.transport.on_dead_letter = self._on_dead_letter
        self.transport.claim_max_size = self.max_size
        mailbox = self._connect()
        if mailbox is None:
            self.stopped.set()
            return
        self.pool.start()
        self.events.send("worker-online", **self.supervisor.heartbeat_fields())
        threading.Thread(target=self.supervisor.run, name="tqcore-supervisor",
                         daemon=True).start()
        self._mailbox = threading.Thread(target=serve_mailbox, name="tqcore-mailbox",
                                         args=(self, self.panel, self.stopped, mailbox),
                                         daemon=True)
        self._mailbox.start()
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
        self.stopping.set()
        with self._held_lock:
            self._held_lock.notify_all()

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Wait until the worker consumes; returns False on timeout."""
        return self._ready.wait(timeout)

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Wait until the worker has shut down."""
        return self.stopped.wait(timeout)

    # -- consumer ------------------------------------------------------------------
    def _claim_due(self) -> bool:
        """Whether a job leaving ``held`` should wake the consumer (``_held_lock`` held):
        when the batching rule of :meth:`_consume` would claim now (half the window
        free, or the pool about to run dry), when nothing is held, when the worker
        stops, or while rate-limited jobs wait (their timers are the consumer's). A
        wake-up for every finished job cost a thread switch each."""
        if not self.held or self.stopping.is_set() or self.timers:
            return True
        return self._room() >= self.prefetch_limit // 2 or self._starving()

    def _starving(self) -> bool:
        """Fewer jobs wait in the pool than it has slots: claim before one idles."""
        return self.pool.queued() < self.pool.concurrency

    def _room(self) -> int:
        """Messages the prefetch window has room for (``_held_lock`` held)."""
        return self.prefetch_limit - (len(self.held) - self._acked_held)

    def _consume(self) -> None:
        backoff = 0.1
        while not self.stopping.is_set():
            self._release_due_timers()
            with self._held_lock:
                capacity = self._room()
            if self.pool.run_one():  # solo: run held work here, between claims
                continue
            with self._held_lock:
                # Claim in batches: wait until half the prefetch window is free (one
                # round trip per several tasks, not per task), unless the pool is about
                # to run dry (fewer jobs waiting than slots): then claim what fits now.
                if capacity <= 0 or (capacity < self.prefetch_limit // 2
                                     and not self._starving()):
                    self._held_lock.wait(0.2)
                    continue
            wait = 0.5
            if self.timers:
                wait = max(0.0, min(wait, self.timers[0][0] - time.monotonic()))
            try:
                deliveries = self.transport.claim(self.queues, consumer=self.hostname,
                                                  limit=capacity, lease=self.lease, timeout=wait)
                backoff = 0.1
            except TransportError as exc:
                logger.error("broker error while claiming: %s (retrying in %.1fs)", exc, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for index, delivery in enumerate(deliveries):
                if self.stopping.is_set():  # shutting down mid-batch: hand the rest back
                    for rest in deliveries[index:]:
                        try:
                            rest.requeue(count_attempt=False)
                        except TqError as exc:
                            logger.error("could not hand back %r: %s", rest, exc)
                    break
                try:
                    self._on_delivery(delivery)
                except TqError as exc:
                    logger.error("could not handle message %r: %s", delivery, exc)

    def _on_delivery(self, delivery: Delivery) -> None:
        signer = self.app.signer
        verify = None if signer is None else (
            lambda env: signer.verify_envelope(env, first_delivery=delivery.attempts == 1))
        try:
            msg = decode_task(delivery.payload, max_size=self.max_size, max_depth=self.max_depth,
                              verify=verify, parsed=delivery.parsed)
        except SignatureError as exc:
            logger.error("message %r refused: %s", delivery, exc)
            delivery.nack(f"refused: {exc}")
            return
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
            self.events.send("task-failed", uuid=msg.id, exception=f"NotRegistered({msg.name!r})",
                             exc_type="NotRegistered", exc_message=msg.name[:200],
                             traceback=None, runtime=0.0, expected=False)
            return
        job = Job(delivery, msg, task, self.hostname)
        logger.info("Task %s[%s] received", job.name, job.id)
        h, chord = msg.headers, msg.embed.get("chord")
        self.events.send(
            "task-received", uuid=job.id, name=job.name, args=h.get("argsrepr"),
            kwargs=h.get("kwargsrepr"), root_id=h.get("root_id") or job.id,
            parent_id=h.get("parent_id"), retries=_int(h.get("retries")),
            eta=h.get("eta"), expires=h.get("expires"), queue=delivery.queue,
            group=h.get("group"), group_index=h.get("group_index"),
            chord=((chord.get("options") or {}).get("task_id")
                   if isinstance(chord, dict) else None),
            attempts=delivery.attempts)
        with self._held_lock:
            self.held[id(job)] = job
        if self.discard_if_dead(job) or self.discard_if_duplicate(job):
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
                heapq.heappush(self.timers, (time.monotonic() + wait, next(self._seq), job))
                return
        self.pool.submit(job)

    def _release_due_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, job = heapq.heappop(self.timers)
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

    def discard_if_dead(self, job: Job) -> bool:
        """Revoked or expired jobs are acked and recorded REVOKED instead of running."""
        reason = None
        if job.id in self.revoked:
            reason = "revoked"
        elif job.expires is not None and job.expires < time.time():
            reason = "expired"
        if reason is None:
            return False
        logger.info("Discarding %s task %s[%s]", reason, job.name, job.id)
        self.events.send("task-revoked", uuid=job.id, terminated=False, signum=None,
                         expired=reason == "expired")
        self._finish(job, job.delivery.ack)
        self._store_quietly(job.id, None, states.REVOKED, job, reason)
        return True

    def _execute(self, job: Job) -> None:
        """Run a job in this thread (threads and solo pools)."""
        if self.discard_if_dead(job):
            return
        try:
            self.accept(job)
            outcome = trace_task(self.app, job.task, job.request)
        except Exception:
            logger.exception("Task %s[%s] could not be run", job.name, job.id)
            self._finish(job, job.delivery.ack)
            return
        self.complete(job, report_of(outcome))

    def jobs(self) -> list[Job]:
        """Every job the worker holds (running, queued for a slot, rate-limited)."""
        with self._held_lock:
            return list(self.held.values())

    def add_queue(self, queue: str) -> None:
        """Start consuming ``queue`` too."""
        if queue not in self.queues:
            self.transport.declare_queue(queue)
            self.queues = [*self.queues, queue]
            self.supervisor.register()

    def cancel_queue(self, queue: str) -> bool:
        """Stop consuming ``queue``; refuses to drop the last one."""
        if queue not in self.queues or len(self.queues) == 1:
            return False
        self.queues = [q for q in self.queues if q != queue]
        self.supervisor.register()
        return True

    def _shutdown(self) -> None:
        mode = "cold" if self._cold else "warm"
        logger.info("%s: %s shutdown", self.hostname, mode)
        unstarted = self.pool.stop(wait=False)
        unstarted += [job for _, _, job in self.timers]
        self.timers.clear()
        for job in unstarted:  # prefetched, never started: back to the queue at once
            self._finish(job, lambda j=job: j.delivery.requeue(count_attempt=False))
        deadline = None if self.soft_shutdown_timeout is None \
            else time.monotonic() + self.soft_shutdown_timeout
        with self._held_lock:
            while self.held and not self._cold:
                if deadline is not None and time.monotonic() >= deadline:
                    logger.warning("soft shutdown timeout: handing %d running task(s) back",
                                   len(self.held))
                    self._cold = True
                    break
                self._held_lock.wait(0.2)
        self.pool.close(kill=self._cold)
        with self._held_lock:
            leftovers = list(self.held.values())
        for job in leftovers:  # cold: running acks_late messages go back now
            if job.acks_late and not job.delivery.settled:
                self._finish(job, job.delivery.requeue)
            else:
                self._finish(job, lambda: None)
        self.stopped.set()
        self.events.flush()
        self.events.send("worker-offline", **self.supervisor.heartbeat_fields())
        try:
            self.transport.unregister_worker(self.hostname)
        except TqError as exc:
            logger.error("could not unregister: %s", exc)
        logger.info("%s: stopped", self.hostname)
