"""Worker records folded from ``worker-*`` events (and task events): liveness, load, counts.

Liveness follows Celery (``celery/events/state.py::Worker.alive``): a worker is online while
``now < last_heartbeat + freq * 2``. Two additions for a monitor that may itself lose the stream:
while the caller says the event stream is unhealthy, every worker is ``unknown`` (never offline,
so a monitor-side outage does not read as 200 lost workers), and when the stream comes back each
worker gets a fresh window before it can expire.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from tqcore import states

ONLINE = "online"
OFFLINE = "offline"
UNKNOWN = "unknown"

#: Celery's ``HEARTBEAT_EXPIRE_WINDOW`` (200 %): expired after two missed heartbeats.
EXPIRE_FACTOR = 2.0
#: Heartbeat interval assumed until a worker reports ``freq`` (Celery's default).
DEFAULT_FREQ = 2.0
#: At most this many missing sequence numbers are remembered per worker (to un-count late ones).
_MAX_MISSING = 1024

# Heartbeat fields by the type they must have: events are untrusted input, and a string where a
# number belongs must not break a reader later (``status`` multiplies ``freq``).
_FLOAT_FIELDS = ("freq", "cpu", "utcoffset")
_INT_FIELDS = ("active", "processed", "pool_size", "pool_busy", "rss", "pid", "clock")
_STR_FIELDS = ("sw_ident", "sw_ver", "sw_sys")


_MAX_FREQ = 3600.0


def _float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _instant(value: Any) -> float | None:
    """An epoch timestamp, or None for anything else (negative, absurdly far, not a number)."""
    number = _float(value)
    return number if number is not None and 0.0 <= number < 1e11 else None


class Liveness:
    """The shared context a worker's status is computed in: the clock and the stream's health."""

    __slots__ = ("clock", "healthy", "resumed_at", "factor")

    def __init__(self, clock: Callable[[], float], factor: float = EXPIRE_FACTOR) -> None:
        self.clock = clock
        self.healthy = True
        #: When the stream last became healthy again: expiry counts from no earlier than this.
        self.resumed_at = 0.0
        self.factor = factor


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """An immutable view of one worker at a moment (see :meth:`Worker.info`)."""

    hostname: str
    status: str
    heartbeat_age: float | None
    last_heartbeat: float | None
    freq: float
    active: int | None
    processed: int | None
    loadavg: tuple[float, ...]
    sw_ident: str | None
    sw_ver: str | None
    sw_sys: str | None
    pool_size: int | None
    pool_busy: int | None
    queues: tuple[str, ...]
    cpu: float | None
    rss: int | None
    seq: int | None
    seq_gaps: int
    tasks_active: int
    counts: Mapping[str, int]


class Worker:
    """One worker: the fields of its latest heartbeat plus counters derived from task events.

    ``active``/``processed`` are what the worker reports; ``tasks_*`` are counted from events
    (``counts`` maps a task state to how many tasks entered it on this worker).
    """

    __slots__ = (
        "hostname", "freq", "active", "processed", "loadavg", "sw_ident", "sw_ver", "sw_sys",
        "pool_size", "pool_busy", "queues", "cpu", "rss", "pid", "clock", "utcoffset",
        "seq", "seq_gaps", "last_heartbeat", "last_seen", "online_at", "offline_at", "offline",
        "drift", "heartbeats", "counts", "tasks_active", "_missing", "_liveness",
    )

    hostname: str
    freq: float | None
    active: int | None
    processed: int | None
    loadavg: tuple[float, ...]
    sw_ident: str | None
    sw_ver: str | None
    sw_sys: str | None
    pool_size: int | None
    pool_busy: int | None
    queues: tuple[str, ...]
    cpu: float | None
    rss: int | None
    pid: int | None
    clock: int | None
    utcoffset: float | None
    #: Latest heartbeat sequence number, and how many numbers are missing so far.
    seq: int | None
    seq_gaps: int
    #: Receiver time (``local_received``, else the event timestamp) of the latest heartbeat.
    last_heartbeat: float | None
    #: Latest time any event came from this worker.
    last_seen: float
    online_at: float | None
    offline_at: float | None
    #: True after ``worker-offline`` until a newer heartbeat.
    offline: bool
    #: ``local_received - timestamp`` of the latest heartbeat (clock skew plus transit).
    drift: float | None
    heartbeats: int
    counts: dict[str, int]
    #: Tasks in STARTED on this worker, by events.
    tasks_active: int
    _missing: set[int]
    _liveness: Liveness

    def __init__(self, hostname: str, liveness: Liveness) -> None:
        self.hostname = hostname
        self._liveness = liveness
        self.freq = self.active = self.processed = self.sw_ident = self.sw_ver = None
        self.sw_sys = self.pool_size = self.pool_busy = self.cpu = self.rss = self.pid = None
        self.clock = self.utcoffset = self.seq = self.last_heartbeat = None
        self.online_at = self.offline_at = self.drift = None
        self.loadavg = ()
        self.queues = ()
        self.seq_gaps = self.heartbeats = self.tasks_active = 0
        self.last_seen = 0.0
        self.offline = False
        self.counts = {}
        self._missing = set()

    # -- folding ------------------------------------------------------------------------
    def on_event(self, subject: str, event: Mapping[str, Any]) -> None:
        """Fold a ``worker-<subject>`` event (online, heartbeat or offline)."""
        get = event.get
        ts = _instant(get("timestamp"))
        local = _instant(get("local_received"))
        at = local if local is not None else ts if ts is not None else self._liveness.clock()
        if local is not None and ts is not None:
            self.drift = local - ts
        if at > self.last_seen:
            self.last_seen = at
        pid = get("pid")
        restarted = subject == "online" or (isinstance(pid, int) and self.pid is not None
                                            and pid != self.pid)
        for name in _FLOAT_FIELDS:
            value = _float(get(name))
            if value is not None:
                setattr(self, name, value)
        if self.freq is not None and not 0.0 < self.freq <= _MAX_FREQ:
            self.freq = None  # nonsense: fall back to the default interval
        for name in _INT_FIELDS:
            value = get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self, name, value)
        for name in _STR_FIELDS:
            value = get(name)
            if isinstance(value, str):
                setattr(self, name, value)
        loadavg = get("loadavg")
        if isinstance(loadavg, list | tuple):
            self.loadavg = tuple(v for v in map(_float, loadavg) if v is not None)
        queues = get("queues")
        if isinstance(queues, list | tuple):  # names, or kombu-style queue dicts
            self.queues = tuple(str(q.get("name")) if isinstance(q, dict) else str(q)
                                for q in queues)
        self._sequence(get("seq"), restarted)
        if subject == "offline":
            self.offline = True
            self.offline_at = at
            return
        if self.offline and self.offline_at is not None and at <= self.offline_at:
            return  # a heartbeat sent before the shutdown, delivered late
        self.offline = False
        self.heartbeats += 1
        if self.last_heartbeat is None or at > self.last_heartbeat:
            self.last_heartbeat = at
        if subject == "online":
            self.online_at = at

    def _sequence(self, seq: Any, restarted: bool) -> None:
        if not isinstance(seq, int):
            return
        last = self.seq
        if last is None or restarted:
            self._missing.clear()
            self.seq = seq
        elif seq > last:
            gap = seq - last - 1
            if gap:
                self.seq_gaps += gap
                if len(self._missing) + gap <= _MAX_MISSING:
                    self._missing.update(range(last + 1, seq))
            self.seq = seq
        elif seq in self._missing:  # a late heartbeat fills its gap
            self._missing.discard(seq)
            self.seq_gaps -= 1

    # -- reading ------------------------------------------------------------------------
    @property
    def heartbeat_expires(self) -> float | None:
        """When the worker counts as gone unless another heartbeat arrives (None: never seen)."""
        last = self.last_heartbeat
        if last is None:
            # Seen only through task events so far: those prove it is alive just as well.
            last = self.last_seen or None
        if last is None:
            return None
        lv = self._liveness
        return max(last, lv.resumed_at) + (self.freq or DEFAULT_FREQ) * lv.factor

    @property
    def status(self) -> str:
        """``online``, ``offline`` or ``unknown`` (the event stream is unhealthy)."""
        lv = self._liveness
        if not lv.healthy:
            return UNKNOWN
        if self.offline:
            return OFFLINE
        expires = self.heartbeat_expires
        return ONLINE if expires is not None and lv.clock() < expires else OFFLINE

    @property
    def alive(self) -> bool:
        """True when :attr:`status` is ``online``."""
        return self.status == ONLINE

    @property
    def heartbeat_age(self) -> float | None:
        """Seconds since the latest heartbeat, by the state's clock."""
        if self.last_heartbeat is None:
            return None
        return self._liveness.clock() - self.last_heartbeat

    @property
    def tasks_received(self) -> int:
        return self.counts.get(states.RECEIVED, 0)

    @property
    def tasks_succeeded(self) -> int:
        return self.counts.get(states.SUCCESS, 0)

    @property
    def tasks_failed(self) -> int:
        return self.counts.get(states.FAILURE, 0)

    @property
    def tasks_retried(self) -> int:
        return self.counts.get(states.RETRY, 0)

    @property
    def tasks_processed(self) -> int:
        """Tasks that finished here (succeeded + failed), by events."""
        return self.tasks_succeeded + self.tasks_failed

    def info(self) -> WorkerInfo:
        """An immutable copy of this worker's figures, with status and age as of now."""
        return WorkerInfo(
            hostname=self.hostname, status=self.status, heartbeat_age=self.heartbeat_age,
            last_heartbeat=self.last_heartbeat, freq=self.freq or DEFAULT_FREQ,
            active=self.active, processed=self.processed, loadavg=self.loadavg,
            sw_ident=self.sw_ident, sw_ver=self.sw_ver, sw_sys=self.sw_sys,
            pool_size=self.pool_size, pool_busy=self.pool_busy, queues=self.queues,
            cpu=self.cpu, rss=self.rss, seq=self.seq, seq_gaps=self.seq_gaps,
            tasks_active=self.tasks_active, counts=MappingProxyType(dict(self.counts)),
        )

    def __repr__(self) -> str:
        return f"<Worker {self.hostname} {self.status}>"
