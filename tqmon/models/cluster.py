"""``Cluster``: everything the UI knows, owned by the UI thread (no locks, Flower's design).

The app folds :class:`~tqmon.contracts.EventBatch` items into :attr:`Cluster.state` (a
:class:`tqcore.events.State`) and keeps the latest :class:`~tqmon.contracts.BrokerFigures` and
:class:`~tqmon.contracts.LinkStatus`, a bounded tail of raw events for the Events view, and the
events/s meter. Views read it on each refresh; nothing here touches Textual.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tqcore.events import State
from tqmon.contracts import BrokerFigures, EventBatch, LinkStatus, QueueFigures

#: Seconds over which events/s is averaged.
RATE_WINDOW = 10.0
#: Depth samples kept per queue (one per figures poll), and queues tracked.
DEPTH_POINTS = 120
MAX_QUEUES = 1_000
#: A pause between polls longer than this many seconds draws as a gap in the trend.
GAP_AFTER = 5.0
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]*)(:[^@/\s]*)?@")


def redact_url(url: str) -> str:
    """``url`` with any user and password hidden (the data side redacts too: belt and braces)."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user'] and '***'}@", url)


@dataclass(frozen=True, slots=True)
class TailEvent:
    """One raw event in the Events view's tail; ``seq`` is its stable row key."""

    seq: int
    received_at: float
    event: dict[str, Any]


class Cluster:
    """The UI's model of the cluster.

    Args:
        clock: epoch seconds (injected: a replay's recorded clock, or a frozen one in tests).
        max_tail: raw events kept for the Events view.
        max_tasks: task rows kept by the state (evicting successes first).
    """

    def __init__(self, clock: Callable[[], float], max_tail: int = 5_000,
                 max_tasks: int = 100_000) -> None:
        self.clock = clock
        self.state = State(clock=clock, max_tasks=max_tasks)
        self.figures: BrokerFigures | None = None
        self.link = LinkStatus("connecting", "")
        #: When the current link state began (the source's ``since``, else our clock).
        self.link_since: float = clock()
        #: Whether the link was ever live (an initial "connecting" is not an outage).
        self.was_live = False
        self.tail: deque[TailEvent] = deque(maxlen=max_tail)
        self._seq = 0
        self._batches: deque[tuple[float, int]] = deque()
        self._depths: dict[str, deque[tuple[float, int]]] = {}
        self._total_depth: deque[tuple[float, int]] = deque(maxlen=DEPTH_POINTS)
        #: Bumped on every change: views skip work when it has not moved.
        self.version = 0

    # -- input ---------------------------------------------------------------------
    def fold(self, batch: EventBatch) -> None:
        """Fold an event batch into the state and the tail."""
        events = batch.events
        self.state.events(events)
        for event in events:
            self._seq += 1
            self.tail.append(TailEvent(self._seq, batch.received_at, event))
        self._batches.append((batch.received_at, len(events)))
        self._trim(batch.received_at)
        self.version += 1

    def set_figures(self, figures: BrokerFigures) -> None:
        """Keep the latest broker figures, and each queue's depth history."""
        self.figures = figures
        for queue in figures.queues:
            history = self._depths.get(queue.name)
            if history is None:
                if len(self._depths) >= MAX_QUEUES:
                    continue
                history = self._depths[queue.name] = deque(maxlen=DEPTH_POINTS)
            history.append((figures.at, queue.depth))
        self._total_depth.append((figures.at, sum(q.depth for q in figures.queues)))
        self.version += 1

    def set_link(self, link: LinkStatus) -> None:
        """Take a new link status: the stream is unhealthy while disconnected (workers then
        read ``unknown``, never ``offline``)."""
        if link.state != self.link.state or link.since is not None:
            self.link_since = link.since if link.since is not None else self.clock()
        self.link = link
        if link.state in ("live", "degraded"):
            self.was_live = True
        self.state.set_stream_healthy(not self.stale)
        self.version += 1

    def _trim(self, now: float) -> None:
        low = now - RATE_WINDOW
        while self._batches and self._batches[0][0] <= low:
            self._batches.popleft()

    # -- reading -------------------------------------------------------------------
    def now(self) -> float:
        """The clock."""
        return self.clock()

    @property
    def stale(self) -> bool:
        """True when what is on screen may be out of date: the broker is unreachable now, or
        the replayed recording was in an outage at this point."""
        link = self.link
        if link.state == "disconnected":
            return True
        return link.state == "replay" and link.detail.startswith("recorded disconnected")

    def events_per_second(self) -> float:
        """Events per second received over the last :data:`RATE_WINDOW` seconds."""
        now = self.clock()
        low = now - RATE_WINDOW
        return sum(n for t, n in self._batches if low < t <= now + 1.0) / RATE_WINDOW

    def lag(self) -> float | None:
        """Now minus the newest event's timestamp (how far behind the screen is)."""
        last = self.state.last_event_at
        return None if last is None else max(0.0, self.clock() - last)

    def figures_age(self) -> float | None:
        """Seconds since the broker figures were polled (None: never)."""
        return None if self.figures is None else max(0.0, self.clock() - self.figures.at)

    def queue_figures(self) -> dict[str, QueueFigures]:
        """The latest broker figures per queue name."""
        return {} if self.figures is None else {q.name: q for q in self.figures.queues}

    def registry(self) -> dict[str, dict[str, Any]]:
        """The broker's worker registry (who registered as alive), by name."""
        return {} if self.figures is None else dict(self.figures.workers)

    def online_workers(self) -> list[str]:
        """Hostnames of the workers online by events, else by the registry."""
        found = [h for h, w in self.state.workers.items() if w.status == "online"]
        return found or sorted(self.registry())

    def depth_history(self, queue: str) -> list[float | None]:
        """The queue's polled depths, oldest first; ``None`` marks a gap (missed polls, or
        the broker unreachable now)."""
        return self._with_gaps(self._depths.get(queue))

    def total_depth_history(self) -> list[float | None]:
        """Ready messages over all queues, per poll (gaps as in :meth:`depth_history`)."""
        return self._with_gaps(self._total_depth)

    def _with_gaps(self, history: deque[tuple[float, int]] | None) -> list[float | None]:
        if not history:
            return []
        out: list[float | None] = []
        prev: float | None = None
        for at, depth in history:
            if prev is not None and at - prev > GAP_AFTER:
                out.append(None)
            out.append(float(depth))
            prev = at
        if self.stale:
            out.append(None)
        return out

    def broker_label(self, fallback: str = "") -> str:
        """The broker to show in the badge, credentials hidden."""
        return redact_url(self.link.broker or fallback)

    def tail_newest_first(self) -> Iterator[TailEvent]:
        """The tail, newest event first."""
        return reversed(self.tail)
