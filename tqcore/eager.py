"""Eager execution: ``Task.apply()`` and ``task_always_eager`` run tasks in this process."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

from tqcore import states
from tqcore.canvas import uuid4
from tqcore.context import Context
from tqcore.result import EagerResult
from tqcore.trace import trace_task

if TYPE_CHECKING:
    from tqcore.result import AsyncResult
    from tqcore.task import Task


def apply_eagerly(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], *,
                  task_id: str | None = None, link: Any = None, link_error: Any = None,
                  retries: int = 0, throw: bool | None = None, **options: Any) -> AsyncResult:
    """Run ``task`` now, in this thread, and wrap the outcome in an :class:`EagerResult`.

    A retry runs the next attempt at once (no countdown) and the result is that of
    the last attempt. With ``task_eager_propagates`` (or ``throw=True``) a failure
    raises here.
    """
    app = task.app
    task_id = task_id or uuid4()
    from tqcore import context

    parent = context.current()
    parent_id = options.get("parent_id")
    root_id = options.get("root_id")
    if parent is not None and parent[1].id:
        parent_id = parent_id or parent[1].id
        root_id = root_id or parent[1].root_id or parent[1].id
    request = Context(
        id=task_id, task=task.name, args=list(args), kwargs=dict(kwargs), retries=retries,
        is_eager=True, called_directly=False, root_id=root_id or task_id, parent_id=parent_id,
        group=options.get("group_id"), group_index=options.get("group_index"),
        chord=options.get("chord"), chain=options.get("chain"),
        callbacks=_as_list(link), errbacks=_as_list(link_error),
        hostname=f"eager{os.getpid()}@{socket.gethostname()}",
        delivery_info={"is_eager": True, "routing_key": options.get("queue")},
        timelimit=[options.get("time_limit"), options.get("soft_time_limit")],
        ignore_result=bool(options.get("ignore_result")))
    outcome = trace_task(app, task, request, eager=True)
    if outcome.state == states.RETRY and outcome.eager_result is not None:
        return outcome.eager_result
    propagate = app.conf.task_eager_propagates if throw is None else throw
    if propagate and outcome.state == states.FAILURE:
        raise outcome.retval
    result = EagerResult(task_id, outcome.retval, outcome.state, outcome.traceback, app=app,
                         name=task.name, children=list(request.children))
    if parent is not None and parent[1].id:
        parent[1].children.append(result)
    return result


def _as_list(value: Any) -> list[Any] | None:
    if not value:
        return None
    if isinstance(value, dict):
        return [value]
    return list(value)
