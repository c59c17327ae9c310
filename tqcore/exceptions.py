"""Every error tqcore raises, rooted at :class:`TqError`.

Names follow Celery's ``celery.exceptions`` where Celery has the concept, so code
that catches ``Retry`` or ``MaxRetriesExceededError`` moves over unchanged.
Driver errors (sqlite3, redis, pika) are translated into the :class:`TransportError`
subtree at the transport boundary and never leak above it.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any


class TqError(Exception):
    """Root of every tqcore error."""


class ImproperlyConfigured(TqError):
    """The configuration (a URL, an option, an app path) cannot be used."""


class TransportError(TqError):
    """A broker or result store failed; raised only from ``transports/`` and ``backends/``."""


class ConnectFailed(TransportError):
    """The broker could not be reached."""


class ConnectionLost(TransportError):
    """An established broker connection went away."""


class DecodeError(TqError):
    """A message could not be decoded (bad JSON, refused content type, over a size cap)."""


class ContentDisallowed(DecodeError):
    """The message's content type is not on the accept list (pickle, yaml, ...)."""


class NotRegistered(TqError, KeyError):
    """No task of that name is registered in the app."""

    def __str__(self) -> str:
        return f"task not registered: {self.args[0]!r}" if self.args else "task not registered"


class QueueNotFound(TqError, KeyError):
    """A task was routed to a queue that is not declared."""


class TimeoutError(TqError):  # noqa: A001 - Celery's name
    """A wait (``AsyncResult.get``) timed out."""


class TaskPredicate(TqError):
    """Base of exceptions a task raises to steer the worker."""


class Retry(TaskPredicate):
    """Raised by :meth:`Task.retry`: the task will be executed again later.

    Args:
        message: human-readable reason.
        exc: the exception that caused the retry, if any.
        when: countdown in seconds or an absolute datetime.
    """

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | None = None,
        when: float | _dt.datetime | None = None,
        is_eager: bool = False,
        sig: Any = None,
    ) -> None:
        self.message = message
        self.exc = exc
        self.when = when
        self.is_eager = is_eager
        self.sig = sig
        super().__init__(message, exc, when)

    def humanize(self) -> str:
        """Say when the retry will happen."""
        if isinstance(self.when, int | float):
            return f"in {self.when}s"
        return f"at {self.when}"

    def __str__(self) -> str:
        if self.message:
            return self.message
        if self.exc:
            return f"Retry {self.humanize()}: {self.exc!r}"
        return f"Retry {self.humanize()}"

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.message, self.exc, self.when)


RetryTaskError = Retry


class Ignore(TaskPredicate):
    """The task's state is managed elsewhere: the worker records nothing."""


class Reject(TaskPredicate):
    """Reject the message: requeue it (``requeue=True``) or dead-letter it."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)


class MaxRetriesExceededError(TqError):
    """The task was retried more than ``max_retries`` times."""

    def __init__(self, *args: Any, task_args: Any = None, task_kwargs: Any = None) -> None:
        self.task_args = task_args
        self.task_kwargs = task_kwargs
        super().__init__(*args)


class TaskRevokedError(TqError):
    """The task was revoked (or expired) and did not run."""


class ChordError(TqError):
    """A task in a chord header failed, so the chord body cannot run."""


class TimeLimitExceeded(TqError):
    """The task ran past its hard time limit and its process was killed."""


class SoftTimeLimitExceeded(TqError):
    """Raised inside the task when its soft time limit passes; catch it to clean up."""


class WorkerLostError(TqError):
    """The process running the task died (SIGKILL, OOM, ``os._exit``)."""


class Terminated(TqError):
    """The task was terminated by a revoke with ``terminate=True``."""


class RemoteError(TqError):
    """A task failed with an exception type this process will not rebuild.

    Raised by :meth:`AsyncResult.get` when the stored exception type is neither a
    builtin exception nor declared by the task (``throws``): nothing is imported by a
    name read from the result backend.

    Attributes:
        exc_type: the remote exception's type name.
        exc_module: the remote exception's module, as stored.
        exc_message: the remote exception's message.
    """

    def __init__(self, exc_type: str, exc_message: str, exc_module: str | None = None) -> None:
        self.exc_type = exc_type
        self.exc_message = exc_message
        self.exc_module = exc_module
        super().__init__(exc_type, exc_message)

    def __str__(self) -> str:
        return f"{self.exc_type}: {self.exc_message}"


class IncompleteStream(TqError):
    """A result or event stream ended early."""


class AlwaysEagerIgnored(UserWarning):
    """An option was given that eager mode cannot honour."""
