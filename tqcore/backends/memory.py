"""An in-process result backend (``memory://``), shared by name like the memory broker."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterable
from typing import Any

from tqcore import states
from tqcore.backends.base import (
    CHORD_CLAIM_TTL,
    FAILED_KEPT,
    REVOKE_TTL,
    ChordPart,
    FailedMessage,
    ResultBackend,
)


class _Store:
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.meta: dict[str, tuple[dict[str, Any], float | None]] = {}
        self.groups: dict[str, Any] = {}
        self.chords: dict[str, dict[int, ChordPart]] = {}
        self.claims: dict[str, tuple[float, bool]] = {}  # group -> (claimed_at, done)
        self.revoked: dict[str, float] = {}
        self.failed: dict[str, FailedMessage] = {}


_stores: dict[str, _Store] = {}
_stores_lock = threading.Lock()


class MemoryBackend(ResultBackend):
    """Results kept in this process's memory."""

    persistent = False

    def __init__(self, url: str = "memory://", **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        name = url.split("://", 1)[1] if "://" in url else ""
        with _stores_lock:
            self._s = _stores.setdefault(name, _Store())

    def _put_meta(self, task_id: str, meta: dict[str, Any]) -> None:
        with self._s.lock:
            old = self._s.meta.get(task_id)
            if old is not None and old[0].get("status") == states.SUCCESS:
                return
            expires = time.time() + self.expires if self.expires else None
            self._s.meta[task_id] = (meta, expires)
            self._s.lock.notify_all()

    def _get_meta(self, task_id: str) -> dict[str, Any] | None:
        with self._s.lock:
            found = self._s.meta.get(task_id)
            if found is None or (found[1] is not None and found[1] < time.time()):
                return None
            return dict(found[0])

    def wait_for(self, task_id: str, timeout: float | None = None,
                 interval: float = 0.5) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._s.lock:
            while True:
                meta = self.get_task_meta(task_id)
                if meta.get("status") in states.READY_STATES:
                    return meta
                if deadline is None:
                    self._s.lock.wait(interval)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return super().wait_for(task_id, timeout=0)
                self._s.lock.wait(remaining)

    def forget(self, task_id: str) -> None:
        with self._s.lock:
            self._s.meta.pop(task_id, None)

    def save_group(self, group_id: str, data: Any) -> None:
        with self._s.lock:
            self._s.groups[group_id] = data

    def restore_group(self, group_id: str) -> Any:
        with self._s.lock:
            return self._s.groups.get(group_id)

    def delete_group(self, group_id: str) -> None:
        with self._s.lock:
            self._s.groups.pop(group_id, None)

    def chord_part_return(self, group_id: str, index: int, task_id: str, status: str,
                          result: Any, size: int) -> list[ChordPart] | None:
        now = time.time()
        with self._s.lock:
            parts = self._s.chords.setdefault(group_id, {})
            parts.setdefault(index, ChordPart(index, task_id, status, result))
            if len(parts) < size:
                return None
            claim = self._s.claims.get(group_id)
            if claim is not None and (claim[1] or claim[0] >= now - CHORD_CLAIM_TTL):
                return None
            self._s.claims[group_id] = (now, False)
            return [parts[i] for i in sorted(parts)]

    def chord_done(self, group_id: str) -> None:
        with self._s.lock:
            self._s.claims[group_id] = (time.time(), True)
            self._s.chords.pop(group_id, None)

    def chord_claim_age(self, group_id: str) -> float | None:
        with self._s.lock:
            claim = self._s.claims.get(group_id)
        if claim is None or claim[1]:
            return None
        return max(0.0, time.time() - claim[0])

    def save_failed(self, failed: FailedMessage) -> None:
        with self._s.lock:
            self._s.failed.pop(failed.task_id, None)
            self._s.failed[failed.task_id] = failed
            while len(self._s.failed) > FAILED_KEPT:
                self._s.failed.pop(next(iter(self._s.failed)))

    def find_failed(self, task_ids: list[str] | None = None, name: str | None = None,
                    exc_type: str | None = None, signature: str | None = None,
                    limit: int = 1000) -> list[FailedMessage]:
        with self._s.lock:
            rows = list(reversed(self._s.failed.values()))
        wanted = set(task_ids) if task_ids is not None else None
        return [f for f in rows
                if (wanted is None or f.task_id in wanted) and (name is None or f.name == name)
                and (exc_type is None or f.exc_type == exc_type)
                and (signature is None or f.signature == signature)][:limit]

    def mark_retried(self, task_id: str) -> None:
        with self._s.lock:
            found = self._s.failed.get(task_id)
            if found is not None:
                self._s.failed[task_id] = dataclasses.replace(found, retried=found.retried + 1)

    def add_revoked(self, task_ids: Iterable[str], ttl: float = REVOKE_TTL) -> None:
        now = time.time()
        with self._s.lock:
            for tid in task_ids:
                self._s.revoked[tid] = now

    def revoked_since(self, since: float) -> tuple[set[str], float]:
        with self._s.lock:
            found = {tid for tid, ts in self._s.revoked.items() if ts >= since}
            newest = max([since, *(ts for ts in self._s.revoked.values())])
            return found, newest
