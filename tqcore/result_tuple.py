"""Celery's tuple form of results (stored as ``children`` and by ``GroupResult.save``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqcore.app import App
    from tqcore.result import ResultBase


def result_from_tuple(r: Any, app: App) -> ResultBase:
    """Rebuild a result from ``((id, parent), None)`` or ``((gid, parent), [members])``.

    Raises:
        ValueError: the data does not have that shape.
    """
    from tqcore.result import AsyncResult, GroupResult

    if not isinstance(r, list | tuple) or len(r) != 2:
        raise ValueError(f"not a result tuple: {r!r:.80}")
    head, nodes = r
    if isinstance(head, list | tuple):
        task_id, parent = head[0], head[1] if len(head) > 1 else None
    else:
        task_id, parent = head, None
    parent_res = result_from_tuple(parent, app) if parent else None
    if nodes is not None:
        return GroupResult(str(task_id), [result_from_tuple(n, app) for n in nodes],
                           parent=parent_res, app=app)
    return AsyncResult(str(task_id), app=app, parent=parent_res)
