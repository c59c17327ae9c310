"""The worker's supervisor thread: leases, registry, heartbeats, revokes, events flush.

It never runs task code, so a long or CPU-bound task cannot starve it: leases of
held messages are renewed every third of the lease, the registry entry and the
``worker-heartbeat`` event go out every ``HEARTBEAT_INTERVAL`` seconds, persisted
revokes are synced every ``REVOKE_SYNC_INTERVAL`` and buffered task events are
flushed every 0.1 s.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
from typing import TYPE_CHECKING, Any

from tqcore import __version__
from tqcore.exceptions import TqError

if TYPE_CHECKING:
    from tqcore.worker.worker import Worker

logger = logging.getLogger("tqcore.worker")

HEARTBEAT_INTERVAL = 2.0
REVOKE_SYNC_INTERVAL = 0.5
CLEANUP_INTERVAL = 600.0

_proc: Any = None


def _process() -> Any:
    """This process as a psutil object (created once; psutil is imported on first use)."""
    global _proc
    if _proc is None or _proc.pid != os.getpid():
        import psutil

        _proc = psutil.Process()
    return _proc


class Supervisor:
    """Periodic duties of a worker, run in their own thread."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._heartbeat_seq = 0
        self._seq_lock = threading.Lock()
        self._revoked_stamp = 0.0
        self._wake = threading.Event()

    def run(self) -> None:
        """Loop until the worker has stopped."""
        w = self.worker
        renew_every = w.lease / 3
        next_renew = next_beat = next_revoke = time.monotonic()
        next_cleanup = time.monotonic() + 5.0
        while not w.stopped.is_set():
            now = time.monotonic()
            try:
                if now >= next_renew:
                    deliveries = [j.delivery for j in w.jobs()]
                    if deliveries:
                        w.transport.renew(deliveries, w.lease)
                    next_renew = now + renew_every
                w.events.flush()
                if now >= next_beat and not w.stopping.is_set():
                    self.register()
                    self.send_heartbeat()
                    next_beat = now + HEARTBEAT_INTERVAL
                if now >= next_revoke:
                    self.sync_revokes()
                    next_revoke = now + REVOKE_SYNC_INTERVAL
                if now >= next_cleanup:
                    w.backend.cleanup()
                    next_cleanup = now + CLEANUP_INTERVAL
            except TqError as exc:
                logger.error("supervisor: %s", exc)
            self._wake.wait(min(0.1, renew_every))
            self._wake.clear()

    def wake(self) -> None:
        """Run the loop now (the events buffer is full, or the worker stops)."""
        self._wake.set()

    def register(self) -> None:
        """Create or refresh the worker's registry entry (expires after 3 heartbeats)."""
        w = self.worker
        w.transport.register_worker(w.hostname, self.registry_info(),
                                    ttl=HEARTBEAT_INTERVAL * 3)

    def registry_info(self) -> dict[str, Any]:
        """What the worker registers about itself (who, where, serving what)."""
        w = self.worker
        return {"hostname": w.hostname, "pid": os.getpid(), "queues": w.queues,
                "pool": w.pool_name, "concurrency": w.pool.concurrency,
                "started": w.started_at, "active": w.pool.active,
                "processed": sum(w.processed.values()),
                "tasks": sorted(n for n in w.app.tasks if not n.startswith("celery."))}

    def heartbeat_fields(self) -> dict[str, Any]:
        """Celery's worker event fields plus tqcore's (pool, queues, cpu, rss, seq)."""
        w = self.worker
        with self._seq_lock:
            self._heartbeat_seq += 1
            seq = self._heartbeat_seq
        proc = _process()
        return {"freq": HEARTBEAT_INTERVAL, "active": w.pool.active,
                "processed": sum(w.processed.values()), "loadavg": list(os.getloadavg()),
                "sw_ident": "py-tqcore", "sw_ver": __version__, "sw_sys": platform.system(),
                "pool_size": w.pool.concurrency, "pool_busy": w.pool.active,
                "queues": list(w.queues), "cpu": proc.cpu_percent(),
                "rss": proc.memory_info().rss, "seq": seq}

    def send_heartbeat(self) -> None:
        """Send a ``worker-heartbeat`` event now."""
        self.worker.events.send("worker-heartbeat", **self.heartbeat_fields())

    def sync_revokes(self, initial: bool = False) -> None:
        """Add revokes persisted since the last sync to the worker's revoked set."""
        since = 0.0 if initial else self._revoked_stamp
        ids, newest = self.worker.backend.revoked_since(since)
        self.worker.revoked |= ids
        if ids and not initial:
            self.worker.pool.recall(ids)
        self._revoked_stamp = newest
