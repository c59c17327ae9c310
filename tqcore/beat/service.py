"""The runnable beat: leader election around the :class:`~tqcore.beat.scheduler.Scheduler`.

Any number of beats may run against one broker; exactly one leads. The leader holds the
lock ``beat:<namespace>`` (in the same store as the schedule state) with an expiry of
``beat_lock_timeout`` seconds and renews it on every loop, waking at least every third
of it. The others retry every second. When the leader stops cleanly it releases the
lock and a standby takes over at once; when it dies, its lock expires and a standby
takes over then, catching up the runs missed meanwhile from the persisted state.

Settings (all optional): ``beat_schedule``, ``timezone``, ``beat_schedule_filename``
(where state lives: a URL or an SQLite file path; default the broker's store),
``beat_max_loop_interval`` (default 5 s), ``beat_lock_timeout`` (10 s),
``beat_max_catchup`` (100), ``beat_namespace`` (default the app's main name).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from tqcore.beat.scheduler import DEFAULT_MAX_CATCHUP, Scheduler
from tqcore.beat.state import beat_store_for_url
from tqcore.exceptions import TqError
from tqcore.locks import Lock, store_for_url, store_url

if TYPE_CHECKING:
    from tqcore.app import App

logger = logging.getLogger("tqcore.beat")

DEFAULT_MAX_INTERVAL = 5.0
DEFAULT_LOCK_TIMEOUT = 10.0
#: Seconds between two attempts of a standby beat to take the lead.
STANDBY_POLL = 1.0
#: Longest back-off after a broker/store error.
MAX_BACKOFF = 10.0


def default_hostname() -> str:
    """``beat<pid>@<host>``: distinct for two beats on one host."""
    return f"beat{os.getpid()}@{socket.gethostname()}"


class Beat:
    """A beat service: run it with :meth:`run` (blocking) or :meth:`start` (a thread).

    Args:
        app: the app whose ``beat_schedule`` runs.
        schedule: where the state lives: a URL or an SQLite file path
            (default ``beat_schedule_filename``, else the broker's store).
        max_interval: most seconds between two loops.
        lock_timeout: seconds a dead leader keeps the lead.
        max_catchup: most missed runs sent per entry after downtime.
        namespace: the schedule's name (beats with the same one elect one leader).
        hostname: this beat's node name in events.
        clock: epoch seconds now (tests).
    """

    def __init__(self, app: App, *, schedule: str | None = None,
                 max_interval: float | None = None, lock_timeout: float | None = None,
                 max_catchup: int | None = None, namespace: str | None = None,
                 hostname: str | None = None, clock: Callable[[], float] = time.time) -> None:
        conf = app.conf
        self.app = app
        self.url = store_url(app, "beat_schedule_filename", schedule)
        self.max_interval = float(max_interval or conf.get("beat_max_loop_interval")
                                  or DEFAULT_MAX_INTERVAL)
        self.lock_timeout = float(lock_timeout or conf.get("beat_lock_timeout")
                                  or DEFAULT_LOCK_TIMEOUT)
        self.namespace = str(namespace or conf.get("beat_namespace") or app.main or "default")
        self.hostname = hostname or default_hostname()
        self.clock = clock
        self.scheduler = Scheduler(
            app, beat_store_for_url(self.url), namespace=self.namespace, clock=clock,
            max_catchup=int(max_catchup or conf.get("beat_max_catchup") or DEFAULT_MAX_CATCHUP))
        self.lock = Lock(store_for_url(self.url), f"beat:{self.namespace}",
                         timeout=self.lock_timeout, blocking=False)
        self.is_leader = False
        self._stopping = threading.Event()
        self._leading = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------
    def run(self) -> None:
        """Loop until :meth:`stop`: take or keep the lead, tick, sleep until due."""
        from tqcore.events.dispatcher import EventDispatcher

        self.scheduler.events = EventDispatcher(self.app.transport, self.hostname,
                                                buffer_limit=0)
        logger.info("beat: starting %s (schedule %r in %s, lock timeout %gs)", self.hostname,
                    self.namespace, self.scheduler.store.display_url, self.lock_timeout)
        backoff = 0.5
        try:
            while not self._stopping.is_set():
                try:
                    delay = self.step()
                    backoff = 0.5
                except TqError as exc:
                    logger.error("beat: %s; retrying in %.1fs", exc, backoff)
                    delay, backoff = backoff, min(backoff * 2, MAX_BACKOFF)
                self._stopping.wait(delay)
        finally:
            self._resign()
            logger.info("beat: stopped %s", self.hostname)

    def step(self) -> float:
        """One loop: returns seconds to sleep before the next one."""
        if not self.is_leader:
            if not self.lock.acquire(blocking=False):
                return min(STANDBY_POLL, self.lock_timeout / 3)
            self.is_leader = True
            logger.info("beat: %s leads schedule %r", self.hostname, self.namespace)
            try:
                self.scheduler.setup()
            except BaseException:
                self._resign()
                raise
            self._leading.set()
        elif not self.lock.extend():
            logger.warning("beat: %s lost the lead of %r (its lock expired)", self.hostname,
                           self.namespace)
            self.lock.token = None
            self.is_leader = False
            self._leading.clear()
            return 0.0
        due_in = self.scheduler.tick()
        return min(due_in, self.max_interval, self.lock_timeout / 3)

    def _resign(self) -> None:
        if not self.is_leader:
            return
        self.is_leader = False
        self._leading.clear()
        try:
            self.lock.release()
        except TqError as exc:  # expired already, or the store is down: it will expire
            logger.warning("beat: could not release the lead: %s", exc)
            self.lock.token = None

    def stop(self) -> None:
        """Ask the loop to finish (it releases the lead so a standby takes over at once)."""
        self._stopping.set()

    def start(self) -> threading.Thread:
        """Run in a daemon thread (``worker -B``); :meth:`stop` then :meth:`join` it."""
        self._thread = threading.Thread(target=self.run, name="tqcore-beat", daemon=True)
        self._thread.start()
        return self._thread

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread started by :meth:`start`."""
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_leader(self, timeout: float) -> bool:
        """Wait until this beat leads (tests)."""
        return self._leading.wait(timeout)


@contextlib.contextmanager
def start_beat(app: App, **options: Any) -> Iterator[Beat]:
    """Run a :class:`Beat` for ``app`` in a thread for the duration of the block.

    Args:
        app: the app.
        **options: :class:`Beat` options.
    """
    beat = Beat(app, **options)
    beat.start()
    try:
        yield beat
    finally:
        beat.stop()
        beat.join(30)
