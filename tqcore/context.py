"""The request context (``self.request``) and the stack of tasks running in a thread."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqcore.task import Task


class Context:
    """What a running task knows about its invocation (Celery's ``self.request``).

    Unknown attributes read as None, so code written for Celery's richer request
    does not break on a field tqcore does not fill.
    """

    id: str | None = None
    task: str | None = None
    args: Any = None
    kwargs: Any = None
    retries: int = 0
    is_eager: bool = False
    eta: str | None = None
    expires: str | None = None
    group: str | None = None
    group_index: int | None = None
    chord: Any = None
    chain: Any = None
    callbacks: Any = None
    errbacks: Any = None
    root_id: str | None = None
    parent_id: str | None = None
    correlation_id: str | None = None
    origin: str | None = None
    hostname: str | None = None
    delivery_info: dict[str, Any] | None = None
    reply_to: str | None = None
    timelimit: Any = None
    ignore_result: bool = False
    replaced_task_nesting: int = 0
    headers: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    stamps: dict[str, Any] | None = None
    shadow: str | None = None
    called_directly: bool = True
    attempts: int = 1
    raw_payload: bytes | None = None

    def __init__(self, **fields: Any) -> None:
        self.children: list[Any] = []
        self.__dict__.update(fields)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return None

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style access, as Celery's Context allows."""
        value = getattr(self, key, default)
        return default if value is None else value

    def update(self, **fields: Any) -> None:
        """Set several fields."""
        self.__dict__.update(fields)

    def as_dict(self) -> dict[str, Any]:
        """The fields set on this context."""
        return {k: v for k, v in self.__dict__.items() if k != "children"}

    def __repr__(self) -> str:
        return f"<Context {self.task}[{self.id}]>"


_local = threading.local()


def _stack() -> list[tuple[Task, Context]]:
    stack: list[tuple[Task, Context]] | None = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def push(task: Task, request: Context) -> None:
    """Mark ``task`` as running with ``request`` in this thread."""
    _stack().append((task, request))


def pop() -> None:
    """Undo the last :func:`push`."""
    stack = _stack()
    if stack:
        stack.pop()


def current() -> tuple[Task, Context] | None:
    """The innermost task running in this thread, with its request."""
    stack = _stack()
    return stack[-1] if stack else None


def request_for(task: Task) -> Context:
    """``task``'s request if it is running in this thread, else an empty context."""
    for t, req in reversed(_stack()):
        if t is task:
            return req
    return Context()
