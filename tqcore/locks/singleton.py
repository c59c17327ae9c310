"""At most one running instance of a task per key: ``@app.task(base=Singleton, ...)``.

::

    @app.task(base=Singleton, lock_key=lambda user_id: f"user:{user_id}", lock_held="retry")
    def sync_user(user_id): ...

Before the body runs (in a worker, or eagerly), the task takes the lock
``<task name>:<key>`` without waiting; if another instance holds it, ``lock_held``
decides: ``"skip"`` returns None without running, ``"retry"`` retries the task after
``lock_retry_delay`` seconds (counted against ``max_retries``), ``"fail"`` raises
:class:`LockHeld`. A direct call (``sync_user(1)``) runs the body without the lock.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from tqcore import context
from tqcore.locks.base import LockError, LockNotOwnedError
from tqcore.task import Task

logger = logging.getLogger("tqcore.locks")

_guarded = threading.local()

LOCK_HELD_POLICIES = ("skip", "retry", "fail")


class LockHeld(LockError):
    """Another instance of a singleton task holds the lock for this key."""


class Singleton(Task):
    """A task base class running at most one instance per key at a time.

    Options (``@app.task(base=Singleton, ...)`` keyword arguments):
        lock_key: a callable taking the task's arguments and returning the key, or a
            format string (``"user:{user_id}"`` or ``"{0}"``); None: one key for all.
        lock_held: ``"skip"``, ``"retry"`` or ``"fail"`` (see the module docstring).
        lock_timeout: seconds the lock lives; None renews it while the task runs and
            lets it expire soon after a worker dies.
        lock_retry_delay: seconds before a ``"retry"``.
    """

    lock_key: ClassVar[Callable[..., Any] | str | None] = None
    lock_held: ClassVar[str] = "skip"
    lock_timeout: ClassVar[float | None] = None
    lock_retry_delay: ClassVar[float] = 2.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.lock_held not in LOCK_HELD_POLICIES:  # fail at decoration, not at run time
            raise ValueError(f"lock_held must be one of {', '.join(LOCK_HELD_POLICIES)}, "
                             f"not {cls.lock_held!r}")

    def singleton_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The lock name for a call: ``<task name>:<key>``."""
        key = self.lock_key
        if inspect.ismethod(key) and key.__self__ is self:
            key = key.__func__  # a plain function given as an option became a method
        if key is None:
            return self.name
        if isinstance(key, str):
            return f"{self.name}:{key.format(*args, **kwargs)}"
        return f"{self.name}:{key(*args, **kwargs)}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        running = context.current()
        held: set[str] = _guarded.__dict__.setdefault("ids", set())
        if (running is None or running[0] is not self or running[1].called_directly
                or not running[1].id or running[1].id in held):
            return super().__call__(*args, **kwargs)
        request_id: str = running[1].id
        from tqcore.locks import app_lock

        name = self.singleton_key(args, kwargs)
        lock = app_lock(self.app, name, timeout=self.lock_timeout, blocking=False)
        if not lock.acquire():
            return self.on_lock_held(name, args, kwargs)
        held.add(request_id)
        try:
            return super().__call__(*args, **kwargs)
        finally:
            held.discard(request_id)
            try:
                lock.release()
            except LockNotOwnedError:
                logger.warning("Task %s[%s]: lock %r expired while the task ran "
                               "(raise lock_timeout)", self.name, request_id, name)

    def on_lock_held(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Apply ``lock_held`` when another instance holds ``name`` (override to customise).

        Raises:
            Retry: with ``"retry"``.
            LockHeld: with ``"fail"``.
        """
        if self.lock_held == "retry":
            logger.info("Task %s[%s]: lock %r is held; retrying in %ss", self.name,
                        self.request.id, name, self.lock_retry_delay)
            raise self.retry(countdown=self.lock_retry_delay)
        if self.lock_held == "fail":
            raise LockHeld(f"lock {name!r} is held by another instance")
        logger.info("Task %s[%s]: lock %r is held; skipped", self.name, self.request.id, name)
        return None
