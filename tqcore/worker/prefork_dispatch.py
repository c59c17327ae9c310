"""Handing jobs to the prefork pool's children (see :mod:`tqcore.worker.prefork`):
to an idle child, or *ahead* to a busy one, and taking jobs sent ahead back."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from tqcore.worker.child import JobSpec, Marks, send

if TYPE_CHECKING:
    from tqcore.worker.job import Job
    from tqcore.worker.worker import Worker

#: A job waits ahead in a busy child's pipe only behind a job younger than this; one
#: waiting behind an older job is withdrawn for a child that became idle.
STEAL_AFTER = 0.02


class Child:
    """The pool's record of one child process: its pipe, marks, current job and the
    job sent ahead to it."""

    __slots__ = ("pid", "conn", "job", "started", "hard_limit", "kill_reason", "stopping",
                 "idle_since", "marks", "seq", "next")

    def __init__(self, pid: int, conn: Connection, marks: Marks) -> None:
        self.pid = pid
        self.conn = conn
        self.marks = marks
        self.seq = 0
        self.job: Job | None = None
        self.started = 0.0
        self.hard_limit: float | None = None
        self.kill_reason: tuple[str, str] | None = None  # ("revoked"|"time-limit", detail)
        self.stopping = False
        self.idle_since = time.monotonic()
        #: The job sent ahead, with its sequence number and hard time limit.
        self.next: tuple[Job, int, float | None] | None = None

    @property
    def accepted(self) -> bool:
        """The child started the body of its current job (see the accepted mark)."""
        return bool(self.seq) and self.marks.accepted == self.seq


class Dispatch:
    """Part of :class:`~tqcore.worker.prefork.PreforkPool`: dispatch (``_section`` held
    by the caller, except :meth:`recall`, which takes it)."""

    children: dict[int, Child]
    pending: collections.deque[Job]
    worker: Worker
    active: int
    _lock: threading.Lock
    _section: threading.Lock
    _seq: int
    _dispatching: bool
    _child_settles: bool

    def _on_death(self, child: Child) -> None:
        raise NotImplementedError

    def _wake(self) -> None:
        raise NotImplementedError

    def _dispatch(self) -> None:
        if not self._dispatching:
            return
        ahead = any(c.next is not None for c in self.children.values())
        for child in list(self.children.values()):
            while child.job is None and not child.stopping and child.pid in self.children:
                # The oldest job not started: one waiting behind a long job, else queued.
                stolen = ahead and self._withdraw(lambda job: True, older_than=STEAL_AFTER)
                if stolen:
                    with self._lock:
                        self.pending.extendleft(reversed(stolen))
                with self._lock:
                    if not self.pending:
                        return
                    job = self.pending.popleft()
                self._hand(child, job)
        now = time.monotonic()
        for child in list(self.children.values()):
            if child.job is None or child.next is not None or child.stopping \
                    or now - child.started >= STEAL_AFTER:
                continue
            while child.next is None and child.pid in self.children:
                with self._lock:
                    if not self.pending:
                        return
                    job = self.pending.popleft()
                self._hand(child, job, ahead=True)

    def _hand(self, child: Child, job: Job, ahead: bool = False) -> None:
        """Send ``job`` to ``child``: to run now, or next (``ahead``), unless it is
        revoked or expired."""
        if self.worker.discard_if_dead(job):
            return
        hard, soft = self.worker.time_limits_for(job)
        mode = ""
        if self._child_settles:
            mode = "late" if job.acks_late else "early"
        spec = JobSpec(job.delivery.payload, job.delivery.queue, job.delivery.attempts,
                       job.delivery.priority, self.worker.hostname, soft,
                       delivery_id=job.delivery.delivery_id if mode else None, settle=mode)
        # Early ack (unless the child does it) before the child can start the body: a
        # worker killed after this loses the task at most, never runs it twice. A job
        # sent ahead is announced (task-started) when it starts.
        if not ahead:
            self.worker.accept(job, ack=not mode)
        elif not mode:
            self.worker.ack_early(job)
        with self._lock:
            self._seq += 1
            spec.seq = self._seq
            if ahead:
                child.next = (job, self._seq, hard)
            else:
                child.job, child.started, child.hard_limit = job, time.monotonic(), hard
                child.kill_reason = None
                child.seq = self._seq
            self.active += 1
        try:
            send(child.conn, ("run", spec.wire()))
        except OSError:
            self._on_death(child)

    def recall(self, task_ids: Iterable[str]) -> None:
        """Take jobs sent ahead for ``task_ids`` back unstarted (revoked: the next
        dispatch discards them)."""
        wanted = set(task_ids)
        with self._section:
            taken = self._withdraw(lambda job: job.id in wanted)
            with self._lock:
                self.pending.extendleft(reversed(taken))
        if taken:
            self._wake()

    def _withdraw(self, which: Callable[[Job], bool], older_than: float | None = None
                  ) -> list[Job]:
        """Take back the jobs sent ahead that ``which`` selects (and that wait behind a job
        started more than ``older_than`` seconds ago) and that their child has not
        started (``_section`` held)."""
        taken: list[Job] = []
        now = time.monotonic()
        for child in list(self.children.values()):
            ahead = child.next
            if ahead is None or not which(ahead[0]) or (
                    older_than is not None and now - child.started < older_than):
                continue
            if child.marks.withdraw(ahead[1]):
                child.next = None
                with self._lock:
                    self.active -= 1
                taken.append(ahead[0])
        return taken

    def _turn_due(self) -> float:
        """Seconds until the next turn is needed without a wake-up: 0.1, or sooner when
        a child is idle and a job sent ahead will be old enough to withdraw for it."""
        due = 0.1
        if self._dispatching and any(c.next is not None for c in self.children.values()) and any(
                c.job is None and not c.stopping for c in self.children.values()):
            now = time.monotonic()
            for child in self.children.values():
                if child.next is not None:
                    due = min(due, max(0.0, child.started + STEAL_AFTER - now) + 0.001)
        return due
