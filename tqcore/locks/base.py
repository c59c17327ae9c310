"""The distributed lock: one :class:`Lock` class over small atomic store primitives.

A lock is a named record holding the owner's random token and an expiry. Taking it
succeeds only when there is no live record; releasing or extending it succeeds only
for the token that took it, so a holder whose lock expired (and was taken by someone
else) can never release the new owner's lock. Expiry is what frees a lock whose holder
died: a SIGKILLed process holds nothing after ``timeout`` seconds.

With ``timeout=None`` the lock is *renewed while held*: a daemon thread extends it
every third of :data:`WATCHDOG_LEASE`, so it never expires under a live holder however
long the work takes, and expires within one lease after the holder dies.
"""

from __future__ import annotations

import abc
import logging
import secrets
import threading
import time
from types import TracebackType

from tqcore.exceptions import TqError

logger = logging.getLogger("tqcore.locks")

#: Seconds a ``timeout=None`` lock lives past its holder's last renewal.
WATCHDOG_LEASE = 30.0
#: The longest pause between two attempts of a blocking acquire.
MAX_POLL = 0.1


class LockError(TqError):
    """A lock could not be used as asked."""


class LockNotOwnedError(LockError):
    """Released or extended a lock this holder does not own (it expired, maybe taken)."""


class LockTimeout(LockError):
    """The lock was not acquired: held by another owner past ``blocking_timeout``
    (or at once, for a non-blocking lock used as a context manager)."""


class LockStore(abc.ABC):
    """Atomic primitives on named lock records. Implementations must be thread-safe.

    Every ``ttl`` is in seconds and measured on the store's clock.
    """

    #: The URL this store was opened from (credentials redacted).
    display_url: str = ""

    @abc.abstractmethod
    def try_acquire(self, name: str, token: str, ttl: float) -> bool:
        """Take ``name`` for ``token`` unless a live record exists; True on success."""

    @abc.abstractmethod
    def release(self, name: str, token: str) -> bool:
        """Delete ``name`` if ``token`` holds it; False if it does not (any more)."""

    @abc.abstractmethod
    def extend(self, name: str, token: str, ttl: float) -> bool:
        """Set ``name``'s expiry to ``ttl`` from now if ``token`` holds it."""

    @abc.abstractmethod
    def owner(self, name: str) -> str | None:
        """The token holding ``name``, or None if it is free (or expired)."""

    def wait(self, name: str, timeout: float) -> None:
        """Pause before the next attempt on ``name`` (a store may wake early on release)."""
        time.sleep(timeout)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class Lock:
    """A distributed mutex. Use it as a context manager or with acquire/release.

    One ``Lock`` object is one would-be holder: create one per thread or task
    (``app.lock(...)`` does). It is not re-entrant.

    Args:
        store: where the lock lives (from :func:`tqcore.locks.app_lock`).
        name: the lock's name; every holder of the same name excludes the others.
        timeout: seconds the lock lives once taken, unless extended; None renews it
            in the background while held (it expires :data:`WATCHDOG_LEASE` seconds
            after a dead holder's last renewal).
        blocking: wait for the lock when it is held.
        blocking_timeout: most seconds to wait (None: forever).
        sleep: the longest pause between two attempts while waiting.

    Raises:
        ValueError: ``timeout`` or ``blocking_timeout`` is negative, or ``name`` empty.
    """

    def __init__(self, store: LockStore, name: str, timeout: float | None = None,
                 blocking: bool = True, blocking_timeout: float | None = None,
                 sleep: float = MAX_POLL) -> None:
        if not name:
            raise ValueError("a lock needs a name")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"lock timeout must be positive, not {timeout!r}")
        if blocking_timeout is not None and blocking_timeout < 0:
            raise ValueError(f"blocking_timeout must not be negative, not {blocking_timeout!r}")
        self.store = store
        self.name = name
        self.timeout = timeout
        self.blocking = blocking
        self.blocking_timeout = blocking_timeout
        self.sleep = max(0.001, sleep)
        self.token: str | None = None
        self._watchdog: threading.Thread | None = None
        self._stop_watchdog = threading.Event()

    @property
    def ttl(self) -> float:
        """Seconds a taken lock lives before it must be extended."""
        return self.timeout if self.timeout is not None else WATCHDOG_LEASE

    def acquire(self, blocking: bool | None = None, blocking_timeout: float | None = None,
                token: str | None = None) -> bool:
        """Take the lock.

        Args:
            blocking: override the lock's ``blocking``.
            blocking_timeout: override the lock's ``blocking_timeout``.
            token: the owner token to use (a random one by default).

        Returns:
            True if taken; False if held by another owner (after the wait, if blocking).

        Raises:
            LockError: this object already holds the lock.
        """
        if self.token is not None:
            raise LockError(f"lock {self.name!r} is already held by this Lock object")
        blocking = self.blocking if blocking is None else blocking
        limit = self.blocking_timeout if blocking_timeout is None else blocking_timeout
        deadline = None if limit is None else time.monotonic() + limit
        token = token or secrets.token_hex(16)
        pause = 0.005
        while True:
            if self.store.try_acquire(self.name, token, self.ttl):
                self.token = token
                if self.timeout is None:
                    self._start_watchdog()
                return True
            if not blocking:
                return False
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self.store.wait(self.name, pause if remaining is None else min(pause, remaining))
            pause = min(pause * 2, self.sleep)

    def release(self) -> None:
        """Let the lock go.

        Raises:
            LockNotOwnedError: not held by this object, or it expired in the meantime
                (the work it guarded may have overlapped another holder's).
        """
        token = self.token
        if token is None:
            raise LockNotOwnedError(f"cannot release lock {self.name!r}: not acquired")
        self._stop()
        self.token = None
        if not self.store.release(self.name, token):
            raise LockNotOwnedError(f"lock {self.name!r} expired before it was released")

    def extend(self, timeout: float | None = None) -> bool:
        """Push the expiry to ``timeout`` (default: the lock's) seconds from now.

        Returns:
            False when the lock is no longer ours (it expired and may be taken).
        """
        token = self.token
        if token is None:
            return False
        return self.store.extend(self.name, token, self.ttl if timeout is None else timeout)

    def locked(self) -> bool:
        """True when anyone holds the lock."""
        return self.store.owner(self.name) is not None

    def owned(self) -> bool:
        """True when this object holds the lock (and it has not expired)."""
        return self.token is not None and self.store.owner(self.name) == self.token

    def __enter__(self) -> Lock:
        if not self.acquire():
            raise LockTimeout(f"lock {self.name!r} is held by another owner"
                              + (f" (waited {self.blocking_timeout:g}s)"
                                 if self.blocking and self.blocking_timeout is not None else ""))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.release()
        except LockNotOwnedError:
            # Raising here would hide the block's own exception; the overlap is logged.
            if exc is None:
                raise
            logger.warning("lock %r expired before the end of its block", self.name)

    def _start_watchdog(self) -> None:
        self._stop_watchdog.clear()
        token, stop = self.token, self._stop_watchdog

        def renew() -> None:
            while not stop.wait(WATCHDOG_LEASE / 3):
                try:
                    if token is None or not self.store.extend(self.name, token, WATCHDOG_LEASE):
                        logger.warning("lock %r was lost while held", self.name)
                        return
                except TqError as exc:  # a transient store error: try again next round
                    logger.warning("lock %r could not be renewed: %s", self.name, exc)

        self._watchdog = threading.Thread(target=renew, name=f"tqcore-lock-{self.name}",
                                          daemon=True)
        self._watchdog.start()

    def _stop(self) -> None:
        self._stop_watchdog.set()
        thread, self._watchdog = self._watchdog, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def __repr__(self) -> str:
        state = "held" if self.token else "free"
        return f"<Lock {self.name!r} {state} on {self.store.display_url}>"
