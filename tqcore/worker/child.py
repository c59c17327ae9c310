"""A prefork pool child: runs one task at a time for the parent, over a pipe.

Parent → child messages: ``("run", JobSpec fields)`` or ``("stop",)``.
Child → parent: ``("done", task_id, Report fields, exiting, settled)`` when a task ended
(``exiting``: the child leaves now, having reached its task or memory limit;
``settled``: the child acked, requeued or dead-lettered the message itself). Right
before a body starts, the child writes the job's sequence number into its *accepted
mark* (8 bytes of memory shared with the parent): the parent reads it only if the child
dies, to tell a job that never started (handed to another child) from one that did —
a pipe message for it would cost the parent a wake-up per task. The child stores
results, sends callbacks and chain steps itself (it has its own broker and backend
connections). Where the transport lets any process settle a delivery
(:attr:`JobSpec.settle`), the child also settles the message, in its own round trip,
so the parent's one manager thread is not a broker round trip per task for every
child: an early ack right before the body (after the accepted mark, so a child dying
in between is a lost task, never a second run), a late ack after it. Otherwise the
parent acks early itself before handing the job over. The parent sends events. A child exits after
``max_tasks`` tasks or once its RSS passes ``max_memory_kib``; the parent replaces it.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import pickle
import signal
import struct
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


#: The accepted mark's layout: the sequence number of the job whose body is starting.
ACCEPTED = struct.Struct("<q")


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


def child_main(app: App, conn: Connection, mark: mmap.mmap, max_tasks: int | None,
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
            ACCEPTED.pack_into(mark, 0, spec.seq)
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
