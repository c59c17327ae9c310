"""Execution pools: where a worker runs task bodies.

A pool receives :class:`~tqcore.worker.job.Job` objects and runs them with the
worker's ``execute`` callable. The consumer asks :meth:`Pool.free_slots` before
handing more work over, so a busy pool never hoards prefetched jobs that an idle
slot elsewhere could run (the prefork pool adds processes behind the same methods).
"""

from __future__ import annotations

import abc
import collections
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from tqcore.exceptions import TqError

if TYPE_CHECKING:
    from tqcore.worker.job import Job

logger = logging.getLogger("tqcore.worker")

_STOP = object()


class Pool(abc.ABC):
    """A set of execution slots.

    Args:
        concurrency: number of slots.
        execute: runs one job to completion (settling its message).
    """

    name = "base"

    def __init__(self, concurrency: int, execute: Callable[[Job], None]) -> None:
        self.concurrency = max(1, concurrency)
        self.execute = execute
        self.active = 0
        self._lock = threading.Lock()

    @abc.abstractmethod
    def start(self) -> None:
        """Start the slots."""

    @abc.abstractmethod
    def submit(self, job: Job) -> None:
        """Run ``job`` in a free slot (or queue it for the next free one)."""

    @abc.abstractmethod
    def stop(self, wait: bool = True, timeout: float | None = None) -> list[Job]:
        """Stop; returns the jobs that were submitted but never started."""

    #: True when :meth:`terminate_job` can stop a running task (process pools).
    can_terminate = False

    def terminate_job(self, task_id: str, signal: str) -> bool:
        """Stop the process running ``task_id``; False when not running here or unsupported."""
        return False

    def recall(self, task_ids: Iterable[str]) -> None:  # noqa: B027 - optional hook
        """Revoked ``task_ids``: take back any of them sent to a slot and not started."""

    def close(self, kill: bool = False) -> None:  # noqa: B027 - optional hook
        """Release the slots after :meth:`stop` (``kill``: abort running work)."""

    @property
    def prefetch_slots(self) -> int:
        """Slots the prefetch window is sized for (``prefetch_multiplier`` x this)."""
        return self.concurrency

    def free_slots(self) -> int:
        """Slots not running a job."""
        return max(0, self.concurrency - self.active)

    def queued(self) -> int:
        """Jobs submitted and not started yet."""
        return 0

    def run_one(self) -> bool:
        """Run one queued job in the calling (consumer) thread; False when the pool runs
        jobs elsewhere or has none waiting."""
        return False

    def grow(self, n: int = 1) -> None:
        """Add ``n`` slots."""
        raise TqError(f"the {self.name} pool cannot grow")

    def shrink(self, n: int = 1) -> None:
        """Remove ``n`` slots (after their current job)."""
        raise TqError(f"the {self.name} pool cannot shrink")

    def info(self) -> dict[str, object]:
        """Figures for ``inspect stats``."""
        return {"implementation": self.name, "max-concurrency": self.concurrency,
                "active": self.active}

    def _run(self, job: Job) -> None:
        with self._lock:
            self.active += 1
        try:
            self.execute(job)
        except Exception:  # execute settles its own errors; this is a last resort
            logger.exception("pool: job %r crashed the executor", job)
        finally:
            with self._lock:
                self.active -= 1


class ThreadPool(Pool):
    """Threads taking jobs from one shared queue (any idle thread takes the next job)."""

    name = "threads"

    def __init__(self, concurrency: int, execute: Callable[[Job], None]) -> None:
        super().__init__(concurrency, execute)
        self._queue: queue.Queue[object] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._retire = 0

    def start(self) -> None:
        for _ in range(self.concurrency):
            self._spawn()

    def _spawn(self) -> None:
        t = threading.Thread(target=self._loop, name=f"tqcore-pool-{len(self._threads)}",
                             daemon=True)
        self._threads.append(t)
        t.start()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            self._run(item)  # type: ignore[arg-type]
            with self._lock:
                if self._retire > 0:
                    self._retire -= 1
                    return

    def submit(self, job: Job) -> None:
        self._queue.put(job)

    def pending(self) -> int:
        """Jobs queued but not started."""
        return self._queue.qsize()

    def free_slots(self) -> int:
        return max(0, self.concurrency - self.active - self._queue.qsize())

    def queued(self) -> int:
        return self._queue.qsize()

    def grow(self, n: int = 1) -> None:
        with self._lock:
            self.concurrency += n
        for _ in range(n):
            self._spawn()

    def shrink(self, n: int = 1) -> None:
        with self._lock:
            n = min(n, self.concurrency - 1)
            self.concurrency -= n
        for _ in range(n):
            self._queue.put(_STOP)

    def stop(self, wait: bool = True, timeout: float | None = None) -> list[Job]:
        unstarted: list[Job] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                unstarted.append(item)  # type: ignore[arg-type]
        for _ in self._threads:
            self._queue.put(_STOP)
        if wait:
            for t in self._threads:
                t.join(timeout)
        return unstarted


class SoloPool(Pool):
    """Runs jobs one at a time in the consumer thread itself.

    Submitted jobs wait in a local queue (they are held by the worker, so their leases
    are renewed) and the consumer runs one between claims; at shutdown the ones not
    started are handed back.
    """

    name = "solo"

    @property
    def prefetch_slots(self) -> int:
        return self._slots

    def __init__(self, concurrency: int, execute: Callable[[Job], None]) -> None:
        super().__init__(1, execute)
        # Celery sizes a solo worker's prefetch window by its -c too (default: CPUs): one
        # slot, but the next messages already here when it frees, not a broker round trip away.
        self._slots = max(1, concurrency)
        self._pending: collections.deque[Job] = collections.deque()

    def start(self) -> None:
        pass

    def submit(self, job: Job) -> None:
        self._pending.append(job)

    def run_one(self) -> bool:
        if not self._pending:
            return False
        self._run(self._pending.popleft())
        return True

    def free_slots(self) -> int:
        return 0 if self._pending or self.active else 1

    def queued(self) -> int:
        return len(self._pending)

    def stop(self, wait: bool = True, timeout: float | None = None) -> list[Job]:
        unstarted = list(self._pending)
        self._pending.clear()
        return unstarted


POOLS: dict[str, type[Pool]] = {"threads": ThreadPool, "solo": SoloPool}


def pool_class(name: str) -> type[Pool]:
    """The pool class for ``-P name``.

    Raises:
        KeyError: unknown pool name.
    """
    return POOLS[name]
