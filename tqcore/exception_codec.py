"""Exceptions to and from the backend's ``{"exc_type", "exc_message", "exc_module"}`` form.

Rebuilding is the dangerous direction (CVE-2021-23727): a name read from the backend
is only ever *looked up* in a fixed allow-list: builtin exception types, tqcore's
own exceptions, and the types the task declared in ``throws``. Nothing is imported.
Anything else becomes :class:`~tqcore.exceptions.RemoteError`.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

from tqcore import exceptions as tq_exceptions
from tqcore.exceptions import RemoteError

if TYPE_CHECKING:
    from tqcore.app import App

_TQ_MODULES = ("tqcore.exceptions", "celery.exceptions", "billiard.exceptions")


def exception_to_meta(exc: BaseException) -> dict[str, Any]:
    """The JSON form Celery stores for a failed task."""
    from tqcore.codec import dumps

    args: list[Any] = []
    for arg in exc.args:
        try:
            dumps(arg)
            args.append(arg)
        except (TypeError, ValueError):
            args.append(repr(arg))
    cls = type(exc)
    return {"exc_type": cls.__name__, "exc_message": args, "exc_module": cls.__module__}


def _safe_args(message: Any) -> tuple[Any, ...]:
    if isinstance(message, list | tuple):
        return tuple(message)
    return (message,)


def exception_from_meta(value: Any, app: App | None = None, task_name: str | None = None) -> Any:
    """Rebuild an exception from its stored form, never importing anything.

    Returns ``value`` unchanged when it is not an exception dict.
    """
    if not isinstance(value, dict) or "exc_type" not in value:
        return value
    name = str(value.get("exc_type"))
    module = str(value.get("exc_module") or "builtins")
    message = value.get("exc_message", ())
    args = _safe_args(message)
    cls: Any = None
    if module == "builtins":
        candidate = getattr(builtins, name, None)
        if isinstance(candidate, type) and issubclass(candidate, Exception):
            cls = candidate
    elif module in _TQ_MODULES:
        candidate = getattr(tq_exceptions, name, None)
        if isinstance(candidate, type) and issubclass(candidate, Exception):
            cls = candidate
    if cls is None and app is not None and task_name:
        task = app.tasks.get(task_name)
        for declared in getattr(task, "throws", ()) or ():
            if declared.__name__ == name and declared.__module__ == module:
                cls = declared
                break
    text = " ".join(str(a) for a in args) if args else ""
    if cls is None:
        return RemoteError(name, text, module)
    try:
        return cls(*args)
    except Exception:
        return RemoteError(name, text, module)
