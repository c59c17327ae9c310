"""Task records folded from ``task-*`` events, and the table that merges out-of-order events.

Celery's rule (``celery/events/state.py::Task.event``): an event whose state logically happens
before the current one (lower precedence) only merges fields; otherwise it sets the state. RETRY
is special: an event into or out of RETRY always wins. tqcore keeps that rule with one change:
a finished task (SUCCESS, FAILURE, REVOKED) never goes back to an unfinished state, and a
finished state always beats an unfinished one (Celery lets a late ``task-retried`` turn SUCCESS
into RETRY, and lets a custom state such as PROGRESS hide a revoke).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tqcore import states

if TYPE_CHECKING:
    from tqcore.events.queues import QueueStats
    from tqcore.events.workers import Worker
    from tqcore.events.workflows import Progress

#: A state's rank is its index in :data:`tqcore.states.PRECEDENCE`: lower is more final.
R_SUCCESS = states.precedence(states.SUCCESS)
R_FAILURE = states.precedence(states.FAILURE)
R_CUSTOM = states.precedence(None)
R_REVOKED = states.precedence(states.REVOKED)
R_STARTED = states.precedence(states.STARTED)
R_RECEIVED = states.precedence(states.RECEIVED)
R_REJECTED = states.precedence(states.REJECTED)
R_RETRY = states.precedence(states.RETRY)
R_PENDING = states.precedence(states.PENDING)
#: The rank of a record just created, before its first event is applied: anything applies.
R_NEW = len(states.PRECEDENCE)

_READY_RANKS = frozenset(states.precedence(s) for s in states.READY_STATES)


def _applies(current: int, new: int) -> bool:
    if current == R_NEW:
        return True
    if current in _READY_RANKS:  # finished: only an equally or more final state
        return new in _READY_RANKS and new <= current
    if new in _READY_RANKS:
        return True
    if new == R_RETRY or current == R_RETRY:  # Celery: RETRY always moves
        return True
    return new <= current


#: ``APPLY[current_rank][new_rank]``: does an event with ``new_rank`` set the state (True) or
#: only fill fields the record does not have yet (False)? A table, so the hot path is two indexes.
APPLY: tuple[tuple[bool, ...], ...] = tuple(
    tuple(_applies(cur, new) for new in range(R_NEW + 1)) for cur in range(R_NEW + 1))

#: Eviction classes, evicted in this order (oldest first within a class).
EVICT_SUCCESS, EVICT_FINISHED, EVICT_LIVE, EVICT_FAILED = range(4)


def _eviction_class(rank: int) -> int:
    if rank == R_SUCCESS:
        return EVICT_SUCCESS
    if rank == R_FAILURE:
        return EVICT_FAILED
    if rank in _READY_RANKS:
        return EVICT_FINISHED
    return EVICT_LIVE


#: ``EVICTION_CLASS[rank]``.
EVICTION_CLASS: tuple[int, ...] = tuple(_eviction_class(r) for r in range(R_NEW + 1))

#: The message's own fields (task-sent, task-received); a late event fills only missing ones.
HEADER_FIELDS = ("name", "args", "kwargs", "retries", "eta", "expires", "queue", "group_index")
#: Fields a late event of each kind may fill when the record lacks them.
LATE_FIELDS = {
    "succeeded": ("result", "runtime"),
    "failed": ("exception", "exc_type", "exc_message", "traceback", "runtime"),
    "retried": ("exception", "exc_type", "exc_message", "traceback"),
}
#: Common event fields, left out of ``Task.info``.
_COMMON = frozenset({"type", "uuid", "hostname", "timestamp", "utcoffset", "pid", "clock",
                     "local_received"})


class Task:
    """One task as its events describe it. Owned by :class:`~tqcore.events.State`: read it, don't
    write it (the fold keeps indexes in step with these fields).

    Per-state timestamps (``sent`` … ``rejected``) are event timestamps (epoch seconds) of the
    latest event of that kind; ``timestamp`` is that of the event that set ``state``.
    """

    __slots__ = (
        "uuid", "name", "state", "timestamp",
        "sent", "received", "started", "succeeded", "failed", "retried", "revoked", "rejected",
        "args", "kwargs", "result", "exception", "exc_type", "exc_message", "traceback", "runtime",
        "worker", "queue", "retries", "eta", "expires", "group_index",
        "root_id", "parent_id", "group", "chord", "signature", "info",
        "rank", "bucket", "wf", "grp", "active_on", "waiting_in",
    )

    uuid: str
    name: str | None
    #: Celery state name; ``"PENDING"`` until the first event is applied.
    state: str
    timestamp: float | None
    sent: float | None
    received: float | None
    started: float | None
    succeeded: float | None
    failed: float | None
    retried: float | None
    revoked: float | None
    rejected: float | None
    args: Any
    kwargs: Any
    #: ``repr`` of the return value (Celery: saferepr, at most 1024 characters).
    result: Any
    #: ``repr`` of the exception (task-failed / task-retried).
    exception: str | None
    exc_type: str | None
    exc_message: str | None
    traceback: str | None
    runtime: float | None
    #: Hostname of the worker that last handled it (never the producer's).
    worker: str | None
    queue: str | None
    retries: int | None
    eta: Any
    expires: Any
    #: Position in its group (tqcore's ``group_index``).
    group_index: int | None
    root_id: str | None
    parent_id: str | None
    #: Group id (``group_id`` header).
    group: str | None
    #: Chord id: the chord body's task id.
    chord: str | None
    #: Failure signature id (:mod:`tqcore.events.signatures`) when it failed.
    signature: str | None
    #: Extra fields of the latest custom event (``task-progress`` …).
    info: dict[str, Any] | None
    # Bookkeeping owned by State.
    rank: int
    bucket: int
    wf: Progress | None
    grp: Progress | None
    active_on: Worker | None
    waiting_in: QueueStats | None

    def __init__(self, uuid: str) -> None:
        self.uuid = uuid
        self.state = states.PENDING
        self.rank = R_NEW
        self.bucket = EVICT_LIVE
        self.name = self.timestamp = self.sent = self.received = self.started = None
        self.succeeded = self.failed = self.retried = self.revoked = self.rejected = None
        self.args = self.kwargs = self.result = self.exception = self.exc_type = None
        self.exc_message = self.traceback = self.runtime = self.worker = self.queue = None
        self.retries = self.eta = self.expires = self.group_index = None
        self.root_id = self.parent_id = None
        self.group = self.chord = self.signature = self.info = None
        self.wf = self.grp = self.active_on = self.waiting_in = None

    @property
    def ready(self) -> bool:
        """True once finished (SUCCESS, FAILURE or REVOKED)."""
        return self.state in states.READY_STATES

    @property
    def finished_at(self) -> float | None:
        """Timestamp of the event that finished it, or None while unfinished."""
        return self.timestamp if self.state in states.READY_STATES else None

    def as_dict(self) -> dict[str, Any]:
        """A plain copy of the public fields (for JSON output and immutable views)."""
        return {name: getattr(self, name) for name in _PUBLIC}

    def __repr__(self) -> str:
        return f"<Task {self.uuid} {self.name} {self.state}>"


_PUBLIC = Task.__slots__[:Task.__slots__.index("rank")]


#: Header fields used as index keys or in signatures: strings only (events are untrusted).
_KEYS = frozenset({"name", "queue"})


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def to_number(value: Any) -> float | None:
    """A finite float from an event field, or None for anything that is not one."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def to_runtime(value: Any) -> float | None:
    """A runtime in seconds (0 to 1e9), or None."""
    number = to_number(value)
    return number if number is not None and 0.0 <= number < 1e9 else None


def extra_fields(event: Mapping[str, Any]) -> dict[str, Any]:
    """An event's own fields (without the common ones), for ``Task.info``."""
    return {k: v for k, v in event.items() if k not in _COMMON}


def apply_headers(task: Task, event: Mapping[str, Any]) -> None:
    """The message's own fields from task-sent / task-received. A message's name, args and
    queue do not change, so only what a retry changes (``retries``, ``eta``) is overwritten;
    the rest is filled where missing (cheaper: most are set by the earlier task-sent)."""
    get = event.get
    value = get("retries")
    if value is not None:
        task.retries = value
    value = get("eta")
    if value is not None:
        task.eta = value
    if task.name is None:
        value = get("name")
        if value.__class__ is str:
            task.name = value
    if task.args is None:
        task.args = get("args")
    if task.kwargs is None:
        task.kwargs = get("kwargs")
    if task.expires is None:
        task.expires = get("expires")
    if task.queue is None:
        value = get("queue") or get("routing_key")
        if value.__class__ is str:
            task.queue = value
    if task.group_index is None:
        task.group_index = get("group_index")


def fill_headers(task: Task, event: Mapping[str, Any]) -> None:
    """The message's own fields, only where the record has none (a late event)."""
    get = event.get
    for name in HEADER_FIELDS:
        if getattr(task, name) is None:
            value = get(name)
            if value is not None and (name not in _KEYS or isinstance(value, str)):
                setattr(task, name, value)


def fill_late(task: Task, event: Mapping[str, Any], subject: str, ts: float) -> None:
    """A ``task-<subject>`` event that happened before the current state: fill gaps only."""
    if getattr(task, subject) is None:
        setattr(task, subject, ts)
    get = event.get
    for name in LATE_FIELDS.get(subject, ()):
        if getattr(task, name) is None:
            value = get(name)
            if name == "runtime":
                task.runtime = to_runtime(value)
            elif name == "result" or isinstance(value, str):
                setattr(task, name, value)
    if task.worker is None and subject != "sent":
        task.worker = _str(get("hostname"))


def set_exception(task: Task, event: Mapping[str, Any]) -> None:
    """Copy the exception fields of task-failed / task-retried."""
    get = event.get
    task.exception = _str(get("exception"))
    task.traceback = _str(get("traceback"))
    task.exc_type = _str(get("exc_type"))
    task.exc_message = _str(get("exc_message"))
