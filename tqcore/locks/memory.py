"""Locks in this process's memory (``memory://``): for tests and single-process apps.

Stores are shared by name like the memory broker, so every ``memory://name`` app in
the process sees the same locks. Waiters are woken as soon as a lock is released.
"""

from __future__ import annotations

import threading
import time

from tqcore.locks.base import LockStore

_stores: dict[str, MemoryLockStore] = {}
_stores_lock = threading.Lock()


class MemoryLockStore(LockStore):
    """Lock records in a dict under one condition variable (monotonic clock)."""

    def __init__(self, name: str = "") -> None:
        self.display_url = f"memory://{name}"
        self.cond = threading.Condition()
        self.records: dict[str, tuple[str, float]] = {}

    @classmethod
    def shared(cls, name: str) -> MemoryLockStore:
        """The process-wide store called ``name``."""
        with _stores_lock:
            store = _stores.get(name)
            if store is None:
                store = _stores[name] = cls(name)
            return store

    def _live(self, name: str) -> tuple[str, float] | None:
        rec = self.records.get(name)
        if rec is not None and rec[1] <= time.monotonic():
            del self.records[name]
            return None
        return rec

    def try_acquire(self, name: str, token: str, ttl: float) -> bool:
        with self.cond:
            if self._live(name) is not None:
                return False
            self.records[name] = (token, time.monotonic() + ttl)
            return True

    def release(self, name: str, token: str) -> bool:
        with self.cond:
            rec = self._live(name)
            if rec is None or rec[0] != token:
                return False
            del self.records[name]
            self.cond.notify_all()
            return True

    def extend(self, name: str, token: str, ttl: float) -> bool:
        with self.cond:
            rec = self._live(name)
            if rec is None or rec[0] != token:
                return False
            self.records[name] = (token, time.monotonic() + ttl)
            return True

    def owner(self, name: str) -> str | None:
        with self.cond:
            rec = self._live(name)
            return rec[0] if rec else None

    def wait(self, name: str, timeout: float) -> None:
        with self.cond:
            rec = self._live(name)
            if rec is not None:
                # wake on release, or when the record would expire
                self.cond.wait(min(timeout, max(0.0, rec[1] - time.monotonic())))
