"""A prefork pool child: runs one task at a time for the parent, over a pipe.

Parent → child messages: ``("run", JobSpec)`` or ``("stop",)``.
Child → parent messages: ``("accepted", task_id)`` when the body is about to run,
``("done", task_id, Report, exiting)`` when it ended (``exiting``: the child leaves
now, having reached its task or memory limit). The child stores results, sends
callbacks and chain steps itself (it has its own broker and backend connections);
the parent settles messages and sends events. A child exits after
``max_tasks`` tasks or once its RSS passes ``max_memory_kib``; the parent replaces it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
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


def _on_soft_limit(signum: int, frame: FrameType | None) -> None:
    raise SoftTimeLimitExceeded("soft time limit exceeded")


def _rss_kib() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def child_main(app: App, conn: Connection, max_tasks: int | None,
               max_memory_kib: int | None) -> NoReturn:
    """Serve jobs from ``conn`` until told to stop or a recycling limit is reached."""
    from tqcore.message import decode_task
    from tqcore.trace import Report, report_of, trace_task
    from tqcore.transports.base import Delivery
    from tqcore.worker.job import Job

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
                msg: Any = conn.recv()
            except (EOFError, OSError):
                break
            if msg[0] != "run":
                break
            spec: JobSpec = msg[1]
            decoded = decode_task(spec.payload, max_size=int(app.conf.task_message_max_size),
                                  max_depth=int(app.conf.task_message_max_depth))
            delivery = Delivery(None, spec.queue, spec.payload, spec.attempts,  # type: ignore[arg-type]
                                spec.priority, None, decoded.id)
            job = Job(delivery, decoded, app.tasks[decoded.name], spec.hostname)
            conn.send(("accepted", decoded.id))
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
            conn.send(("done", decoded.id, rep, exiting))
            if exiting:
                break
    except BaseException:  # noqa: BLE001 - the parent sees the death and recovers
        status = 1
    finally:
        os._exit(status)
