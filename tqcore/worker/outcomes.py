"""How a job ends: accepting it, completing it, and the ways it can die.

A mixin of :class:`~tqcore.worker.worker.Worker`. The pools call :meth:`accept` when a
task body starts and :meth:`complete` with its :class:`~tqcore.trace.Report`; the
prefork pool also calls :meth:`job_terminated`, :meth:`job_failed_in_parent` and
:meth:`job_lost` when a child process dies. Each sends the task's event and settles
its message exactly once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tqcore import states
from tqcore.events.dispatcher import EventDispatcher
from tqcore.exceptions import DecodeError, TransportError, WorkerLostError
from tqcore.message import decode_task
from tqcore.trace import Report, on_chord_part_return, on_failure, report_of
from tqcore.transports.base import Delivery
from tqcore.worker.job import Job

if TYPE_CHECKING:
    from tqcore.app import App
    from tqcore.backends.base import ResultBackend
    from tqcore.transports.base import DeadLetter, Transport

logger = logging.getLogger("tqcore.worker")

#: Ids of tasks that succeeded here, remembered for deduplication (Celery keeps 1,000).
SUCCEEDED_KEPT = 1000


def settle(delivery: Delivery, rep: Report) -> bool:
    """Settle ``delivery`` as a task that ended with ``rep`` should be: requeued or
    dead-lettered when the task rejected it, acked otherwise. False when the broker
    could not be told (the message stays leased and comes back after its lease)."""
    try:
        if rep.state == states.REJECTED and rep.requeue:
            delivery.requeue()
        elif rep.state == states.REJECTED:
            delivery.nack(f"rejected by task: {rep.exc_message}")
        else:
            delivery.ack()
    except TransportError as exc:
        logger.error("could not settle %r: %s", delivery, exc)
        return False
    return True


class JobOutcomes:
    """Settling jobs; expects the attributes a :class:`Worker` has."""

    app: App
    backend: ResultBackend
    transport: Transport
    events: EventDispatcher
    hostname: str
    held: dict[int, Job]
    _held_lock: threading.Condition
    _acked_held: int
    _claim_due: Callable[[], bool]  # should a job leaving ``held`` wake the consumer
    processed: dict[str, int]
    dedupe: bool  # worker_deduplicate_successful_tasks
    succeeded: dict[str, None]  # the last SUCCEEDED_KEPT ids that succeeded here, oldest first
    time_limits: dict[str, tuple[float | None, float | None]]
    max_size: int
    max_depth: int
    _cold: bool

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
    def time_limits_for(self, job: Job) -> tuple[float | None, float | None]:
        """(hard, soft) seconds: per call, else set at runtime, else the task's, else app-wide."""
        # Once per dispatched job: plain lookups (the settings' mapping rather than its
        # attribute fallback), no list built.
        limit = job.message.headers.get("timelimit")
        hard = soft = None
        if type(limit) is list or type(limit) is tuple:
            hard = limit[0] if len(limit) > 0 else None
            soft = limit[1] if len(limit) > 1 else None
        override = self.time_limits.get(job.name) or (None, None)
        task, conf = job.task, self.app.conf._data
        hard = hard or override[0] or task.time_limit or conf.get("task_time_limit")
        soft = soft or override[1] or task.soft_time_limit or conf.get("task_soft_time_limit")
        return hard, soft

    def job_terminated(self, job: Job, signal_name: str) -> None:
        """A running task was stopped by ``revoke(terminate=True)``: REVOKED, message acked."""
        logger.warning("Task %s[%s] terminated by %s", job.name, job.id, signal_name)
        self._store_quietly(job.id, None, states.REVOKED, job, f"terminated by {signal_name}")
        self.complete(job, Report(states.REVOKED, exc_message=signal_name))

    def job_failed_in_parent(self, job: Job, exc: BaseException) -> None:
        """The task's process died (time limit, lost): record the failure as a task would."""
        outcome = on_failure(self.app, job.task, job.request, exc, True,
                             job.task.effective_ignore_result, time.perf_counter(), False)
        self.complete(job, report_of(outcome))

    def _on_dead_letter(self, letter: DeadLetter) -> None:
        """A message was claimed more than ``max_deliveries`` times (its task keeps
        killing its process, or workers keep dying): record the task as failed, with
        its workflow told, instead of leaving it PENDING forever."""
        exc = WorkerLostError(letter.reason)
        try:
            msg = decode_task(letter.payload, max_size=self.max_size, max_depth=self.max_depth)
        except DecodeError:
            if letter.message_id:
                self._store_quietly(letter.message_id, exc, states.FAILURE)
            return
        task = self.app.tasks.get(msg.name)
        if task is None:
            self._store_quietly(msg.id, exc, states.FAILURE)
            return
        delivery = Delivery(self.transport, letter.queue, letter.payload, letter.attempts, 0,
                            None, msg.id)
        delivery.settled = True
        job = Job(delivery, msg, task, self.hostname)
        logger.error("Task %s[%s] dead-lettered: %s", job.name, job.id, letter.reason)
        outcome = on_failure(self.app, task, job.request, exc, True,
                             task.effective_ignore_result, time.perf_counter(), False)
        rep = report_of(outcome)
        self.events.send("task-failed", uuid=job.id, exception=rep.exception,
                         traceback=rep.traceback, exc_type=rep.exc_type,
                         exc_message=rep.exc_message, runtime=0.0, expected=False)

    def job_lost(self, job: Job, exc: BaseException) -> None:
        """The task's process died unexpectedly (SIGKILL, OOM, ``os._exit``).

        With ``acks_late`` and ``reject_on_worker_lost`` (or during a cold shutdown) the
        message goes back to the queue, its attempt counted (so a task that always kills
        its process ends in the dead-letter queue after ``max_deliveries``); otherwise the
        task fails with :class:`WorkerLostError`.
        """
        reject = job.task.reject_on_worker_lost
        if reject is None:
            reject = self.app.conf.task_reject_on_worker_lost
        if job.acks_late and (reject or self._cold) and not job.delivery.settled:
            logger.error("Task %s[%s] lost its process: requeued (attempt %d)", job.name,
                         job.id, job.delivery.attempts)
            self.events.send("task-rejected", uuid=job.id, requeue=True)
            self._finish(job, job.delivery.requeue)
            return
        logger.error("Task %s[%s] failed: %r", job.name, job.id, exc)
        self.job_failed_in_parent(job, exc)

    def accept(self, job: Job, ack: bool = True, at: float | None = None) -> None:
        """The job starts now (or started ``at``, epoch seconds): early ack (unless
        ``ack`` is False: the pool acks), ``task-started`` event (once per job)."""
        if job.started is not None:
            return
        job.started = at or time.time()
        self.ack_early(job, send=ack)
        self.events.send("task-started", uuid=job.id, timestamp=job.started)

    def ack_early(self, job: Job, send: bool = True) -> None:
        """Unless the job acks late: it leaves the prefetch window, and its message is
        acked (unless ``send`` is False: the pool's child does it). Once per job."""
        if job.acks_late or job.acked:
            return
        job.acked = True
        with self._held_lock:
            if id(job) in self.held:
                self._acked_held += 1
        if send:
            job.delivery.ack(wait=False)

    def complete(self, job: Job, rep: Report) -> None:
        """The job ended with ``rep``: count it, send its event, settle its message."""
        self.processed[job.name] = self.processed.get(job.name, 0) + 1
        state, delivery = rep.state, job.delivery
        if state == states.SUCCESS:
            self.events.send("task-succeeded", uuid=job.id, result=rep.result,
                             runtime=rep.runtime)
            if self.dedupe:
                with self._held_lock:  # pool threads complete jobs side by side
                    self.succeeded[job.id] = None
                    if len(self.succeeded) > SUCCEEDED_KEPT:
                        del self.succeeded[next(iter(self.succeeded))]
        elif state in (states.FAILURE, states.RETRY):
            self.events.send(
                "task-failed" if state == states.FAILURE else "task-retried", uuid=job.id,
                exception=rep.exception, traceback=rep.traceback, exc_type=rep.exc_type,
                exc_message=rep.exc_message, runtime=rep.runtime, expected=rep.expected)
        elif state == states.REJECTED:
            self.events.send("task-rejected", uuid=job.id, requeue=rep.requeue)
        elif state == states.REVOKED:
            self.events.send("task-revoked", uuid=job.id, terminated=True,
                             signum=rep.exc_message, expired=False)
        self._finish(job, lambda: settle(delivery, rep))

    def discard_if_duplicate(self, job: Job) -> bool:
        """``worker_deduplicate_successful_tasks``: a redelivered ``acks_late`` message of
        a task that already succeeded (here, or as the result backend says) is acked
        instead of run again. Celery's rule: only with a backend every process sees."""
        if not (self.dedupe and job.acks_late and job.delivery.redelivered):
            return False
        if job.id not in self.succeeded:
            if not self.backend.persistent:
                return False
            try:
                state = self.backend.get_task_meta(job.id).get("status")
            except Exception as exc:  # noqa: BLE001 - unsure: run it (at least once)
                logger.warning("could not ask the result backend about %s[%s], running it:"
                               " %s", job.name, job.id, exc)
                return False
            if state != states.SUCCESS:
                return False
        logger.info("Discarding duplicate of task %s[%s]: it already succeeded",
                    job.name, job.id)
        self._finish(job, job.delivery.ack)
        return True

    def _finish(self, job: Job, action: Any) -> None:
        try:
            action()
        except TransportError as exc:
            # The message stays leased in the broker and comes back after the lease.
            logger.error("could not settle %r: %s", job.delivery, exc)
        finally:
            with self._held_lock:
                if self.held.pop(id(job), None) is not None and job.acked:
                    self._acked_held -= 1
                if self._claim_due():
                    self._held_lock.notify_all()

    # -- supervisor ----------------------------------------------------------------
