"""Task results: :class:`AsyncResult`, :class:`GroupResult`, :class:`EagerResult`.

Results read the app's result backend. An unknown id is ``PENDING`` (as in Celery).
``get()`` re-raises a remote exception as its own type only for builtin exceptions,
tqcore's own and the types the task declared in ``throws``; anything else comes back
as :class:`~tqcore.exceptions.RemoteError` with the type name and message. Nothing
is imported by a name read from the backend.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from tqcore import states
from tqcore.exceptions import TimeoutError as TqTimeoutError

if TYPE_CHECKING:
    from tqcore.app import App

#: Seconds between checks of a chain's earlier steps while waiting for the last one.
PARENT_CHECK = 0.25


class ResultBase(abc.ABC):
    """Common base of single and group results."""

    id: str
    parent: ResultBase | None
    app: App

    @abc.abstractmethod
    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = 0.5, **kwargs: Any) -> Any:
        """Wait for and return the value."""

    @abc.abstractmethod
    def ready(self) -> bool:
        """True when finished."""

    @abc.abstractmethod
    def as_tuple(self) -> Any:
        """Celery's tuple form."""

    def maybe_throw(self) -> None:
        """Raise the stored exception if this (or a member) failed or was revoked."""
        for node in _leaves([self]):
            if isinstance(node, AsyncResult):
                meta = node._get_meta()
                if meta.get("status") in states.PROPAGATE_STATES:
                    exc = node._decode_result(meta)
                    if isinstance(exc, BaseException):
                        raise exc


class AsyncResult(ResultBase):
    """The future result of one task.

    Args:
        id: the task id.
        backend: unused (Celery compatibility); the app's backend is used.
        task_name: the task's name, if known.
        app: the app (defaults to the current one).
        parent: the result of the previous step of a chain, if any.
    """

    def __init__(self, id: str, backend: Any = None, task_name: str | None = None,  # noqa: A002
                 app: App | None = None, parent: ResultBase | None = None) -> None:
        if app is None:
            from tqcore.app import current_app

            app = current_app()
        self.app = app
        self.id = str(id)
        self.task_name = task_name
        self.parent = parent
        self._cache: dict[str, Any] | None = None

    # -- meta -------------------------------------------------------------------
    @property
    def backend(self) -> Any:
        """The result backend."""
        return self.app.backend

    def _get_meta(self) -> dict[str, Any]:
        if self._cache is not None:
            return self._cache
        meta = self.app.backend.get_task_meta(self.id)
        if meta.get("status") in states.READY_STATES:
            self._cache = meta
        return meta

    @property
    def state(self) -> str:
        """The task's state (``PENDING`` when unknown)."""
        return str(self._get_meta().get("status", states.PENDING))

    status = state

    @property
    def info(self) -> Any:
        """The return value, the exception, or the custom meta of a custom state."""
        meta = self._get_meta()
        return self._decode_result(meta)

    result = info

    @property
    def traceback(self) -> str | None:
        """The remote traceback text of a failed task."""
        return self._get_meta().get("traceback")

    @property
    def date_done(self) -> dt.datetime | None:
        """When the task finished (UTC), if it did."""
        value = self._get_meta().get("date_done")
        if not value:
            return None
        return dt.datetime.fromisoformat(value) if isinstance(value, str) else value

    @property
    def children(self) -> list[ResultBase]:
        """Results of the tasks this task sent while it ran (callbacks included)."""
        from tqcore.result_tuple import result_from_tuple

        return [result_from_tuple(c, self.app) for c in self._get_meta().get("children") or []]

    def _extended(self, key: str) -> Any:
        return self._get_meta().get(key)

    @property
    def name(self) -> str | None:
        """The task name (stored with ``result_extended``)."""
        return self._extended("name") or self.task_name

    @property
    def args(self) -> Any:
        """The task's positional arguments."""
        return self._extended("args")

    @property
    def kwargs(self) -> Any:
        """The task's keyword arguments."""
        return self._extended("kwargs")

    @property
    def worker(self) -> str | None:
        """The worker that ran the task."""
        return self._extended("worker")

    @property
    def retries(self) -> int | None:
        """How many times the task was retried."""
        return self._extended("retries")

    @property
    def queue(self) -> str | None:
        """The queue the task came from."""
        return self._extended("queue")

    def _decode_result(self, meta: dict[str, Any]) -> Any:
        status = meta.get("status")
        value = meta.get("result")
        if status in states.EXCEPTION_STATES:
            from tqcore.exception_codec import exception_from_meta

            return exception_from_meta(value, self.app, meta.get("name") or self.task_name)
        return value

    # -- predicates -------------------------------------------------------------
    def ready(self) -> bool:
        """True once the task succeeded, failed or was revoked."""
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        """True if the task succeeded."""
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        """True if the task failed."""
        return self.state == states.FAILURE

    # -- waiting ----------------------------------------------------------------
    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = 0.5, **kwargs: Any) -> Any:
        """Wait for the task and return its result.

        Args:
            timeout: seconds to wait; None waits forever.
            propagate: re-raise the task's exception (FAILURE, REVOKED).
            interval: the longest pause between backend polls.

        Raises:
            tqcore.exceptions.TimeoutError: not ready within ``timeout``.
        """
        backend = self.app.backend
        follow = kwargs.get("follow_parents", True) and propagate and self.parent is not None
        if self._cache is not None:
            meta = self._cache
        elif not follow:
            meta = backend.wait_for(self.id, timeout=timeout, interval=interval)
        else:
            # Like Celery: while waiting, a failed parent (earlier chain step) re-raises.
            # The steps share one subscription (where the backend has them), so a step
            # ending costs no unsubscribe/subscribe and a result between steps is kept.
            deadline = None if timeout is None else time.monotonic() + timeout
            with _watching(backend, [self.id]):
                while True:
                    step = PARENT_CHECK if deadline is None else max(
                        0.0, min(PARENT_CHECK, deadline - time.monotonic()))
                    try:
                        meta = backend.wait_for(self.id, timeout=step, interval=interval)
                        break
                    except TqTimeoutError:
                        self._maybe_reraise_parent_error()
                        if deadline is not None and time.monotonic() >= deadline:
                            raise
        self._cache = meta
        if propagate and meta.get("status") in states.PROPAGATE_STATES:
            exc = self._decode_result(meta)
            if isinstance(exc, BaseException):
                raise exc
        return self._decode_result(meta)

    wait = get

    def _maybe_reraise_parent_error(self) -> None:
        parents: list[ResultBase] = []
        node = self.parent
        while node is not None and len(parents) < 10_000:
            parents.append(node)
            node = node.parent
        parents.reverse()  # the first step first: its failure is the cause
        fetch_many = getattr(self.app.backend, "get_task_metas", None)
        if fetch_many is None:
            for node in parents:
                node.maybe_throw()
            return
        # One round trip for every unfinished parent (a chain of 200 would otherwise
        # cost 200 reads per check while the worker needs the CPU).
        leaves = [n for n in _leaves(parents) if isinstance(n, AsyncResult)]
        unknown = [n for n in leaves if n._cache is None and not isinstance(n, EagerResult)]
        fetched = dict(zip((n.id for n in unknown), fetch_many([n.id for n in unknown]),
                           strict=True)) if unknown else {}
        for leaf in leaves:
            meta = fetched.get(leaf.id) if leaf._cache is None else None
            if meta is None:
                meta = leaf._get_meta()
            elif meta.get("status") in states.READY_STATES:
                leaf._cache = meta
            if meta.get("status") in states.PROPAGATE_STATES:
                exc = leaf._decode_result(meta)
                if isinstance(exc, BaseException):
                    raise exc

    def forget(self) -> None:
        """Remove the result from the backend."""
        self._cache = None
        self.app.backend.forget(self.id)

    def revoke(self, connection: Any = None, terminate: bool = False,
               signal: str | None = None, wait: bool = False,
               timeout: float | None = None) -> None:
        """Revoke the task: a worker will not run it (persisted, honoured by later workers)."""
        self.app.control_revoke([self.id], terminate=terminate, signal=signal)

    def collect(self) -> Iterator[tuple[ResultBase, Any]]:
        """Yield ``(result, value)`` for this task and all its descendants, depth-first."""
        value = self.get()
        yield self, value
        for child in self.children:
            if isinstance(child, AsyncResult):
                yield from child.collect()
            else:
                yield child, child.get()

    def as_tuple(self) -> Any:
        """Celery's tuple form, ``((id, parent_tuple), None)``."""
        parent = self.parent
        return (self.id, parent.as_tuple() if parent is not None else None), None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id}>"

    def __str__(self) -> str:
        return self.id


class EagerResult(AsyncResult):
    """The result of a task run in this process by :meth:`Task.apply`."""

    def __init__(self, id: str, ret_value: Any, state: str, traceback: str | None = None,  # noqa: A002
                 app: App | None = None, name: str | None = None,
                 children: list[ResultBase] | None = None) -> None:
        super().__init__(id, app=app, task_name=name)
        self._value = ret_value
        self._state = state
        self._traceback = traceback
        self._children = children or []

    def _get_meta(self) -> dict[str, Any]:
        return {"status": self._state, "result": self._value, "traceback": self._traceback}

    @property
    def state(self) -> str:
        return self._state

    status = state

    @property
    def info(self) -> Any:
        return self._value

    result = info

    @property
    def children(self) -> list[ResultBase]:
        return list(self._children)

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = 0.5, **kwargs: Any) -> Any:
        if propagate and self._state in states.PROPAGATE_STATES and isinstance(
                self._value, BaseException):
            raise self._value
        return self._value

    wait = get

    def forget(self) -> None:
        pass

    def revoke(self, *args: Any, **kwargs: Any) -> None:
        self._state = states.REVOKED


def _watching(backend: Any, task_ids: list[str]) -> AbstractContextManager[Any]:
    """``backend.watch(task_ids)`` where the backend can subscribe ahead (Redis), else
    nothing: waits inside the block then need no subscription of their own."""
    watch = getattr(backend, "watch", None)
    return watch(task_ids) if watch is not None and task_ids else contextlib.nullcontext()


def _leaves(results: Iterable[ResultBase]) -> Iterator[ResultBase]:
    for r in results:
        if isinstance(r, ResultSet):
            yield from _leaves(r.results)
        else:
            yield r


def _successful(r: ResultBase) -> bool:
    return r.successful() if hasattr(r, "successful") else False


def _failed(r: ResultBase) -> bool:
    return r.failed() if hasattr(r, "failed") else False


# ResultSet and GroupResult live in their own module; re-exported here (Celery's layout).
from tqcore.result_set import GroupResult, ResultSet  # noqa: E402

__all__ = ["AsyncResult", "EagerResult", "GroupResult", "ResultBase", "ResultSet"]
