"""Per-task-type rate limits: ``"10/s"``, ``"100/m"``, ``"1000/h"`` as token buckets."""

from __future__ import annotations

import re
import threading
import time

from tqcore.exceptions import ImproperlyConfigured

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_rate(rate: str | float | int | None) -> float:
    """Tasks per second for a Celery rate string; 0 means no limit.

    Raises:
        ImproperlyConfigured: not of the form ``N``, ``N/s``, ``N/m`` or ``N/h``.
    """
    if rate is None or rate == "":
        return 0.0
    if isinstance(rate, int | float):
        return float(rate)
    m = _RATE.match(rate)
    if not m:
        raise ImproperlyConfigured(f"bad rate limit {rate!r} (use e.g. 10/s, 100/m, 1000/h)")
    return float(m.group(1)) / _UNITS[m.group(2)]


class TokenBucket:
    """A token bucket refilled at ``rate`` tokens/s holding at most ``capacity``.

    Celery uses capacity 1, which spaces tasks evenly rather than allowing bursts.
    """

    def __init__(self, rate: float, capacity: float = 1.0) -> None:
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self) -> float:
        """Take a token; returns 0 on success, else seconds until one is available."""
        with self._lock:
            now = time.monotonic()
            self._refill(now)
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate
