"""Results of several tasks: :class:`ResultSet` and :class:`GroupResult`."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from tqcore.exceptions import TimeoutError as TqTimeoutError
from tqcore.result import AsyncResult, ResultBase, _failed, _leaves, _successful

if TYPE_CHECKING:
    from tqcore.app import App


class ResultSet(ResultBase):
    """A set of results waited on together."""

    def __init__(self, results: Iterable[ResultBase], app: App | None = None) -> None:
        self.results = list(results)
        if app is None:
            from tqcore.app import current_app

            app = current_app()
        self.app = app
        self.parent = None

    def add(self, result: ResultBase) -> None:
        """Add a result."""
        if result not in self.results:
            self.results.append(result)

    def __iter__(self) -> Iterator[ResultBase]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> ResultBase:
        return self.results[index]

    def successful(self) -> bool:
        """True if every task succeeded."""
        return all(_successful(r) for r in self.results)

    def failed(self) -> bool:
        """True if any task failed."""
        return any(_failed(r) for r in self.results)

    def waiting(self) -> bool:
        """True if any task is not ready yet."""
        return not self.ready()

    def ready(self) -> bool:
        """True when every task is ready."""
        return all(r.ready() for r in self.results)

    def completed_count(self) -> int:
        """How many tasks succeeded."""
        return sum(1 for r in self.results if _successful(r))

    def revoke(self, connection: Any = None, terminate: bool = False,
               signal: str | None = None, **kwargs: Any) -> None:
        """Revoke every task."""
        ids = [r.id for r in _leaves(self.results)]
        self.app.control_revoke(ids, terminate=terminate, signal=signal)

    def forget(self) -> None:
        """Forget every result."""
        for r in _leaves(self.results):
            if isinstance(r, AsyncResult):
                r.forget()

    def join(self, timeout: float | None = None, propagate: bool = True,
             interval: float = 0.5, callback: Any = None, **kwargs: Any) -> list[Any]:
        """Wait for every result, in order; returns their values.

        Raises:
            tqcore.exceptions.TimeoutError: not all ready within ``timeout`` (overall).
        """
        from tqcore.result import AsyncResult, _leaves, _watching

        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        # Subscribe to every member's result at once where the backend can (Redis),
        # rather than one subscription per member in turn.
        ids = [r.id for r in _leaves(self.results) if isinstance(r, AsyncResult)]
        with _watching(self.app.backend, ids):
            for r in self.results:
                remaining = None
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TqTimeoutError("the operation timed out")
                value = r.get(timeout=remaining, propagate=propagate, interval=interval)
                if callback is not None:
                    callback(r.id, value)
                else:
                    values.append(value)
        return values

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = 0.5, **kwargs: Any) -> Any:
        """Same as :meth:`join`."""
        return self.join(timeout=timeout, propagate=propagate, interval=interval, **kwargs)

    join_native = join

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(r.id for r in self.results)}]>"


class GroupResult(ResultSet):
    """The result of a group: an id plus the member results.

    Args:
        id: the group id.
        results: member results, in group order.
        parent: the result of a previous chain step, if any.
    """

    def __init__(self, id: str | None = None, results: Iterable[ResultBase] | None = None,  # noqa: A002
                 parent: ResultBase | None = None, app: App | None = None, **kwargs: Any
                 ) -> None:
        super().__init__(results or [], app=app)
        from tqcore.canvas import uuid4

        self.id = id or uuid4()
        self.parent = parent

    @property
    def children(self) -> list[ResultBase]:
        """The member results."""
        return self.results

    def save(self, backend: Any = None) -> GroupResult:
        """Store the group so :meth:`restore` can rebuild it by id."""
        self.app.backend.save_group(self.id, self.as_tuple())
        return self

    def delete(self, backend: Any = None) -> None:
        """Remove the saved group."""
        self.app.backend.delete_group(self.id)

    @classmethod
    def restore(cls, id: str, backend: Any = None, app: App | None = None  # noqa: A002
                ) -> GroupResult | None:
        """The saved group with this id, or None."""
        from tqcore.result_tuple import result_from_tuple

        if app is None:
            from tqcore.app import current_app

            app = current_app()
        data = app.backend.restore_group(id)
        if data is None:
            return None
        res = result_from_tuple(data, app)
        return res if isinstance(res, GroupResult) else None

    def as_tuple(self) -> Any:
        """Celery's tuple form, ``((id, parent_tuple), [member tuples])``."""
        parent = self.parent
        return ((self.id, parent.as_tuple() if parent is not None else None),
                [r.as_tuple() for r in self.results])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return other.id == self.id and other.results == self.results
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"
