"""Per-queue figures derived from task events: counts, waiting tasks, in/out rates.

Only what events tell: a task enters a queue at ``task-sent`` (PENDING) and leaves it when a
worker receives it. Depth as the broker sees it (including tasks sent without events) comes from
the transport's ``queue_stats()``, not from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from tqcore import states

#: Rates are averaged over this many one-second slots.
RATE_WINDOW = 60


class RateWindow:
    """Event counts in one-second slots over the last :data:`RATE_WINDOW` seconds (a ring)."""

    __slots__ = ("_counts", "_secs")

    def __init__(self) -> None:
        self._counts = [0] * RATE_WINDOW
        self._secs = [-1] * RATE_WINDOW

    def add(self, ts: float) -> None:
        """Count one event at ``ts`` (epoch seconds)."""
        sec = int(ts)
        i = sec % RATE_WINDOW
        if self._secs[i] != sec:
            if sec < self._secs[i]:
                return  # older than the window
            self._secs[i] = sec
            self._counts[i] = 0
        self._counts[i] += 1

    def total(self, now: float) -> int:
        """Events in the window ending at ``now``."""
        sec = int(now)
        low = sec - RATE_WINDOW
        return sum(c for c, s in zip(self._counts, self._secs, strict=True) if low < s <= sec)

    def rate(self, now: float) -> float:
        """Events per second over the window ending at ``now``."""
        return self.total(now) / RATE_WINDOW


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """An immutable view of one queue (see :meth:`QueueStats.info`)."""

    name: str
    sent: int
    received: int
    started: int
    succeeded: int
    failed: int
    #: Tasks sent and not yet received (by events).
    waiting: int
    #: Tasks/s sent into, and received out of, the queue over the last minute.
    in_rate: float
    out_rate: float


class QueueStats:
    """Counters for one queue, kept by :class:`~tqcore.events.State`: ``counts`` maps a state to
    how many of the queue's tasks entered it; ``inflow`` counts PENDING entries (sent) and
    ``outflow`` RECEIVED ones (taken by a worker)."""

    __slots__ = ("name", "counts", "waiting", "inflow", "outflow")

    def __init__(self, name: str) -> None:
        self.name = name
        self.counts: dict[str, int] = {}
        self.waiting = 0
        self.inflow = RateWindow()
        self.outflow = RateWindow()

    @property
    def sent(self) -> int:
        return self.counts.get(states.PENDING, 0)

    @property
    def received(self) -> int:
        return self.counts.get(states.RECEIVED, 0)

    @property
    def started(self) -> int:
        return self.counts.get(states.STARTED, 0)

    def info(self, now: float) -> QueueInfo:
        """An immutable copy, with rates over the minute ending at ``now``."""
        get = self.counts.get
        return QueueInfo(
            name=self.name, sent=get(states.PENDING, 0), received=get(states.RECEIVED, 0),
            started=get(states.STARTED, 0), succeeded=get(states.SUCCESS, 0),
            failed=get(states.FAILURE, 0), waiting=self.waiting,
            in_rate=self.inflow.rate(now), out_rate=self.outflow.rate(now),
        )

    def __repr__(self) -> str:
        return f"<QueueStats {self.name} waiting={self.waiting}>"
