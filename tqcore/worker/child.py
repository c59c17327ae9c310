"""A prefork pool child: runs one task at a time for the parent, over a pipe.

Parent → child messages: ``("run", JobSpec fields)`` or ``("stop",)``.
Child → parent: ``("done", task_id, Report fields, exiting, settled)`` when a task ended
(``exiting``: the child leaves now, having reached its task or memory limit;
``settled``: the child acked, requeued or dead-lettered the message itself).

The parent may send a busy child its *next* job before the current one ends, so the
child starts it without waiting for the parent's turn (see :mod:`tqcore.worker.prefork`).
Child and parent share :class:`Marks` (24 bytes of memory and a lock): right before a
body starts, the child writes the job's sequence number there as *accepted*, unless the
parent *withdrew* it first (gave it to an idle child, or back to the queue). The parent
reads the marks to tell a job that never started from one that did when a child dies,
and to signal a child only while it runs the job meant — a pipe message for it would
cost the parent a wake-up per task.

The child stores results, sends callbacks and chain steps itself (it has its own broker
and backend connections). Where the transport lets any process settle a delivery
(:attr:`JobSpec.settle`), the child also settles the message, in its own round trip, so
the parent's one manager thread is not a broker round trip per task for every child: an
early ack right before the body (after the accepted mark, so a child dying in between is
a lost task, never a second run), a late ack after it. Otherwise the parent acks early
itself before it hands the job over, to run now or next. The parent sends events.
A child exits after ``max_tasks`` tasks or once its RSS passes ``max_memory_kib``; the
parent replaces it.
"""

from __future__ import annotations

import dataclasses
import mmap
import multiprocessing
import os
import pickle
import signal
import struct
import time
from multiprocessing.connection import Connection
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from tqcore.exceptions import SoftTimeLimitExceeded

if TYPE_CHECKING:
    from tqcore.app import App


@dataclasses.dataclass(slots=True)
class JobSpec:
    """What a child needs to run one task (the message itself, plus its context)."""

    payload: bytes
    queue: str
    attempts: int
    priority: int
    hostname: str
    soft_time_limit: float | None
    seq: int = 0
    delivery_id: Any = None
    #: settle the message here: "early" (ack before the body), "late" (after), or ""
    #: (the parent does)
    settle: str = ""

    def wire(self) -> tuple[Any, ...]:
        """The fields as a plain tuple (``JobSpec(*t)`` rebuilds it), for the pipe."""
        return (self.payload, self.queue, self.attempts, self.priority, self.hostname,
                self.soft_time_limit, self.seq, self.delivery_id, self.settle)


class Marks:
    """What one child and its parent share about the jobs sent to it: the sequence
    number of the job whose body started last (*accepted*), the highest one the parent
    withdrew (*withdrawn*: the child skips jobs up to it), and the lock that orders the
    two, so a job is either started by the child or withdrawn by the parent, never both.
    """

    LAYOUT = struct.Struct("<qqd")  # accepted, withdrawn, when accepted (epoch seconds)
    #: A child killed inside its few instructions under the lock leaves it held: the
    #: parent gives up after this long rather than hang (that child is dead anyway).
    LOCK_WAIT = 0.5

    def __init__(self) -> None:
        self.mem = mmap.mmap(-1, self.LAYOUT.size)  # anonymous and shared: survives fork
        self.lock = multiprocessing.get_context("fork").Lock()

    @property
    def accepted(self) -> int:
        """The sequence number of the job whose body started last (0: none yet)."""
        return int(self.LAYOUT.unpack_from(self.mem)[0])

    def start(self, seq: int) -> bool:
        """Child: mark job ``seq`` started, unless the parent withdrew it (False)."""
        with self.lock:
            withdrawn = self.LAYOUT.unpack_from(self.mem)[1]
            if seq <= withdrawn:
                return False
            self.LAYOUT.pack_into(self.mem, 0, seq, withdrawn, time.time())
            return True

    def started_at(self, seq: int) -> float | None:
        """When the child started job ``seq`` (None: not started, or a later one since)."""
        accepted, _, when = self.LAYOUT.unpack_from(self.mem)
        return float(when) if accepted == seq else None

    def withdraw(self, seq: int) -> bool:
        """Parent: take job ``seq`` back unless its body started (then False). The child
        skips it (and any earlier one) when it reads it."""
        if not self.lock.acquire(timeout=self.LOCK_WAIT):
            return False
        try:
            accepted, withdrawn, when = self.LAYOUT.unpack_from(self.mem)
            if accepted >= seq:
                return False
            self.LAYOUT.pack_into(self.mem, 0, accepted, max(withdrawn, seq), when)
            return True
        finally:
            self.lock.release()

    def kill_if_on(self, seq: int, pid: int, signum: int) -> bool:
        """Parent: send ``signum`` to ``pid`` unless the child already went on to a later
        job than ``seq`` (False: ``seq`` has ended). Under the lock, so the child cannot
        start its next job between the check and the signal."""
        locked = self.lock.acquire(timeout=self.LOCK_WAIT)
        try:
            if locked and self.accepted > seq:
                return False
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                return False
            return True
        finally:
            if locked:
                self.lock.release()


def send(conn: Connection, msg: tuple[Any, ...]) -> None:
    """Send a pool message (plain pickle: ``Connection.send`` builds a ForkingPickler
    per call, which is most of a small message's cost)."""
    conn.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))


def recv(conn: Connection) -> Any:
    """Receive a pool message sent with :func:`send`."""
    return pickle.loads(conn.recv_bytes())


def _on_soft_limit(signum: int, frame: FrameType | None) -> None:
    raise SoftTimeLimitExceeded("soft time limit exceeded")


def _rss_kib() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def child_main(app: App, conn: Connection, marks: Marks, max_tasks: int | None,
               max_memory_kib: int | None) -> NoReturn:
    """Serve jobs from ``conn`` until told to stop or a recycling limit is reached."""
    from tqcore.exceptions import TransportError
    from tqcore.message import decode_task
    from tqcore.trace import Report, report_of, trace_task
    from tqcore.transports.base import Delivery
    from tqcore.worker.job import Job
    from tqcore.worker.outcomes import settle

    # The parent decides shutdown: Ctrl-C in a terminal must not kill running tasks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    signal.signal(signal.SIGALRM, _on_soft_limit)
    done = 0
    status = 0
    try:
        while True:
            try:
                msg: Any = recv(conn)
            except (EOFError, OSError):
                break
            if msg[0] != "run":
                break
            spec = JobSpec(*msg[1])
            # The parent decoded and checked these very bytes before handing them over:
            # no second depth walk (a long chain's tail is thousands of values).
            decoded = decode_task(spec.payload, max_size=int(app.conf.task_message_max_size),
                                  max_depth=None)
            delivery = Delivery(app.transport, spec.queue, spec.payload, spec.attempts,
                                spec.priority, spec.delivery_id, decoded.id)
            job = Job(delivery, decoded, app.tasks[decoded.name], spec.hostname)
            if not marks.start(spec.seq):
                continue  # withdrawn: it runs elsewhere, and the parent expects no answer
            if spec.settle == "early":
                try:
                    delivery.ack(wait=False)
                except TransportError as exc:
                    # Not acked: do not run it (the parent hands it back to the queue).
                    send(conn, ("done", decoded.id, Report(
                        "REJECTED", requeue=True, exc_message=f"could not ack: {exc}").wire(),
                        False, False))
                    continue
            if spec.soft_time_limit:
                signal.setitimer(signal.ITIMER_REAL, spec.soft_time_limit)
            try:
                outcome = trace_task(app, job.task, job.request)
                rep = report_of(outcome)
            except BaseException as exc:  # a crash here must still be reported
                rep = Report("FAILURE", exc_type=type(exc).__name__, exc_message=str(exc))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            done += 1
            # Say in the same message whether this child is about to exit, so the parent
            # never hands it another job in the meantime.
            exiting = bool(max_tasks and done >= max_tasks) or bool(
                max_memory_kib and _rss_kib() > max_memory_kib)
            settled = spec.settle == "early"
            if spec.settle == "late":
                settled = settle(delivery, rep)
            send(conn, ("done", decoded.id, rep.wire(), exiting, settled))
            if exiting:
                break
    except BaseException:  # noqa: BLE001 - the parent sees the death and recovers
        status = 1
    finally:
        os._exit(status)
