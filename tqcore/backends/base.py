"""The result backend interface: task meta, groups, chord joins and persistent revokes.

Task meta has Celery's fields (celery-wire.md §4.6): ``status``, ``result``,
``traceback``, ``children``, ``date_done``, ``task_id``, and ``group_id``/``parent_id``
when set; with ``result_extended`` also ``name``, ``args``, ``kwargs``, ``worker``,
``retries``, ``queue``. A stored SUCCESS is never overwritten (first success wins, so
a task that ran twice keeps its first result).

Subclasses implement a handful of storage primitives; the policy (meta shape, chord
logic, waiting) lives here.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import time
from collections.abc import Iterable
from typing import Any

from tqcore import states
from tqcore.exception_codec import exception_to_meta
from tqcore.exceptions import TimeoutError as TqTimeoutError

#: Revokes are kept this long (Celery keeps them 3 hours in memory; we persist them).
REVOKE_TTL = 3 * 3600.0


def now_iso() -> str:
    """The current time as ISO-8601 UTC, Celery's ``date_done`` form."""
    return dt.datetime.now(dt.UTC).isoformat()


#: Seconds after which an unfinished chord-body claim (its claimer died between claiming
#: and publishing the body) may be taken over by a re-run header task.
CHORD_CLAIM_TTL = 2.0

#: Failed task messages kept for ``retry`` (newest first beyond this are dropped).
FAILED_KEPT = 10_000


@dataclasses.dataclass(frozen=True, slots=True)
class FailedMessage:
    """The original message of a failed task, kept so it can be re-published exactly.

    Attributes:
        task_id: the task id.
        name: the task name.
        queue: the queue it came from.
        payload: the original envelope bytes.
        exc_type: the exception type name.
        signature: the failure signature id (type + normalised message + top frame).
        failed_at: epoch seconds of the (last) failure.
        retried: how many times it was retried by hand since.
    """

    task_id: str
    name: str
    queue: str
    payload: bytes
    exc_type: str
    signature: str
    failed_at: float
    retried: int = 0

    def summary(self) -> dict[str, Any]:
        """The fields without the payload (for listings and dry runs)."""
        return {"task_id": self.task_id, "name": self.name, "queue": self.queue,
                "exc_type": self.exc_type, "signature": self.signature,
                "failed_at": self.failed_at, "retried": self.retried}


class ChordPart:
    """One finished chord header member as stored by the join."""

    __slots__ = ("index", "task_id", "status", "result")

    def __init__(self, index: int, task_id: str, status: str, result: Any) -> None:
        self.index = index
        self.task_id = task_id
        self.status = status
        self.result = result


class ResultBackend(abc.ABC):
    """Stores task states and results.

    ``persistent``: what it stores outlives the process and is seen by every process
    (False for the in-process memory backend).

    Args:
        url: the backend URL.
        expires: seconds results are kept (``result_expires``); None keeps them.
        extended: store name, args, kwargs, worker, retries and queue too.
    """

    persistent = True

    def __init__(self, url: str, *, expires: float | None = 86400.0,
                 extended: bool = True) -> None:
        from tqcore.urls import redact

        self.url = url
        self.display_url = redact(url)
        self.expires = expires
        self.extended = extended

    # -- storage primitives -------------------------------------------------------
    @abc.abstractmethod
    def _put_meta(self, task_id: str, meta: dict[str, Any]) -> None:
        """Store ``meta`` unless the stored state is SUCCESS."""

    @abc.abstractmethod
    def _get_meta(self, task_id: str) -> dict[str, Any] | None:
        """The stored meta, or None (unknown or expired)."""

    @abc.abstractmethod
    def forget(self, task_id: str) -> None:
        """Delete a task's meta."""

    @abc.abstractmethod
    def save_group(self, group_id: str, data: Any) -> None:
        """Store a group's result tuple."""

    @abc.abstractmethod
    def restore_group(self, group_id: str) -> Any:
        """A stored group tuple, or None."""

    @abc.abstractmethod
    def delete_group(self, group_id: str) -> None:
        """Delete a stored group."""

    @abc.abstractmethod
    def chord_part_return(self, group_id: str, index: int, task_id: str, status: str,
                          result: Any, size: int) -> list[ChordPart] | None:
        """Record a finished header member; atomic and idempotent.

        Returns:
            Every part, ordered by index, to the caller whose part completed the chord
            and who must then publish the body and call :meth:`chord_done`; None to
            every other caller, including a member that runs twice. A claim not marked
            done within ``CHORD_CLAIM_TTL`` may be given to a later caller.
        """

    def chord_done(self, group_id: str) -> None:  # noqa: B027 - optional
        """The body of ``group_id`` was published: the claim is final."""

    def chord_claim_age(self, group_id: str) -> float | None:
        """Seconds since an unfinished claim on ``group_id`` was taken, else None."""
        return None

    @abc.abstractmethod
    def add_revoked(self, task_ids: Iterable[str], ttl: float = REVOKE_TTL) -> None:
        """Persist revokes so every worker, including ones started later, honours them."""

    @abc.abstractmethod
    def revoked_since(self, since: float) -> tuple[set[str], float]:
        """Task ids revoked at or after ``since`` (epoch), and the newest stamp seen."""

    @abc.abstractmethod
    def save_failed(self, failed: FailedMessage) -> None:
        """Keep a failed task's original message (bounded, expiring with results)."""

    @abc.abstractmethod
    def find_failed(self, task_ids: list[str] | None = None, name: str | None = None,
                    exc_type: str | None = None, signature: str | None = None,
                    limit: int = 1000) -> list[FailedMessage]:
        """Kept failed messages matching every given filter, newest first."""

    @abc.abstractmethod
    def mark_retried(self, task_id: str) -> None:
        """Count a manual retry of a kept failed message."""

    def cleanup(self) -> None:  # noqa: B027 - optional
        """Delete expired results (called now and then by workers)."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release connections."""

    # -- policy -------------------------------------------------------------------
    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        """The task's meta; ``{"status": "PENDING", ...}`` when unknown."""
        meta = self._get_meta(task_id)
        if meta is None:
            return {"status": states.PENDING, "result": None, "traceback": None,
                    "children": [], "date_done": None, "task_id": task_id}
        return meta

    def store_result(self, task_id: str, result: Any, state: str,
                     traceback: str | None = None, request: Any = None) -> dict[str, Any]:
        """Store a state and its result (an exception is stored in its JSON form)."""
        if isinstance(result, BaseException):
            result = exception_to_meta(result)
        meta: dict[str, Any] = {
            "status": state,
            "result": result,
            "traceback": traceback,
            "children": _children_of(request),
            "date_done": now_iso() if state in states.READY_STATES else None,
            "task_id": task_id,
        }
        if request is not None:
            group = getattr(request, "group", None)
            if group:
                meta["group_id"] = group
            parent = getattr(request, "parent_id", None)
            if parent:
                meta["parent_id"] = parent
            if self.extended:
                meta.update(
                    name=getattr(request, "task", None),
                    args=getattr(request, "args", None),
                    kwargs=getattr(request, "kwargs", None),
                    worker=getattr(request, "hostname", None),
                    retries=getattr(request, "retries", 0),
                    queue=(getattr(request, "delivery_info", None) or {}).get("routing_key"),
                )
        self._put_meta(task_id, meta)
        return meta

    def mark_as_started(self, task_id: str, request: Any = None, **meta: Any) -> None:
        """Record STARTED with ``{"pid", "hostname"}`` (``track_started``)."""
        self.store_result(task_id, meta, states.STARTED, request=request)

    def mark_as_done(self, task_id: str, result: Any, request: Any = None) -> None:
        """Record SUCCESS."""
        self.store_result(task_id, result, states.SUCCESS, request=request)

    def mark_as_failure(self, task_id: str, exc: BaseException, traceback: str | None = None,
                        request: Any = None) -> None:
        """Record FAILURE with the exception."""
        self.store_result(task_id, exc, states.FAILURE, traceback, request=request)

    def mark_as_retry(self, task_id: str, exc: BaseException, traceback: str | None = None,
                      request: Any = None) -> None:
        """Record RETRY with the exception that caused it."""
        self.store_result(task_id, exc, states.RETRY, traceback, request=request)

    def mark_as_revoked(self, task_id: str, reason: str = "revoked",
                        request: Any = None) -> None:
        """Record REVOKED."""
        from tqcore.exceptions import TaskRevokedError

        self.store_result(task_id, TaskRevokedError(reason), states.REVOKED, request=request)

    def wait_for(self, task_id: str, timeout: float | None = None,
                 interval: float = 0.5) -> dict[str, Any]:
        """Poll until the task is ready; the pause grows from 5 ms to ``interval``.

        Raises:
            tqcore.exceptions.TimeoutError: not ready within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.005
        while True:
            meta = self.get_task_meta(task_id)
            if meta.get("status") in states.READY_STATES:
                return meta
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise TqTimeoutError("the operation timed out")
            sleep = pause if deadline is None else min(pause, max(0.0, deadline - now))
            time.sleep(sleep)
            pause = min(pause * 1.5, max(interval, 0.005))


def _children_of(request: Any) -> list[Any]:
    children = getattr(request, "children", None) or []
    out = []
    for child in children:
        try:
            out.append(child.as_tuple())
        except Exception:  # a broken child must not lose the parent's result
            continue
    return out
