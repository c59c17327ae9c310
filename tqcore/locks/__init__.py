"""Distributed locks: ``with app.lock("report", timeout=60): ...``.

A lock lives in the app's broker store when it has one (``memory://``, ``sqlite://``,
``redis://``), else in its result backend's; the ``lock_backend`` setting names another
URL. See :class:`~tqcore.locks.base.Lock` for the semantics (tokens, expiry, renewal)
and :class:`~tqcore.locks.singleton.Singleton` for "at most one running task per key".
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from tqcore.exceptions import ImproperlyConfigured
from tqcore.locks.base import (
    WATCHDOG_LEASE,
    Lock,
    LockError,
    LockNotOwnedError,
    LockStore,
    LockTimeout,
)
from tqcore.urls import redact, scheme_of

if TYPE_CHECKING:
    from tqcore.app import App

__all__ = ["WATCHDOG_LEASE", "Lock", "LockError", "LockHeld", "LockNotOwnedError", "LockStore",
           "LockTimeout", "Singleton", "app_lock", "store_for_url", "store_url"]

#: URL schemes that can hold locks (and beat's state).
LOCK_SCHEMES = ("memory", "sqlite", "redis", "rediss")

_stores: dict[tuple[str, int], LockStore] = {}
_stores_lock = threading.Lock()


def store_url(app: App, setting: str = "lock_backend", explicit: str | None = None) -> str:
    """The URL where ``app`` keeps locks: ``explicit``, else the ``setting``, else the
    broker's store, else the result backend's. A bare path means an SQLite file.

    Raises:
        ImproperlyConfigured: none of them can hold locks (an AMQP broker with an
            ``rpc://`` backend, say): set ``setting``.
    """
    explicit = explicit or app.conf.get(setting)
    if explicit:
        url = str(explicit)
        if "://" not in url:  # a bare path: an SQLite file
            url = "sqlite:///" + os.path.abspath(url)
        if scheme_of(url) not in LOCK_SCHEMES:
            raise ImproperlyConfigured(f"{setting} {redact(url)!r} cannot hold locks "
                                       f"(use memory://, sqlite:// or redis://)")
        return url
    for url in (app.conf.broker(), app.conf.backend()):
        if scheme_of(url) in LOCK_SCHEMES:
            return url
    raise ImproperlyConfigured(
        f"neither the broker nor the result backend can hold locks; set {setting} "
        f"to a sqlite:// or redis:// URL")


def store_for_url(url: str) -> LockStore:
    """The lock store for ``url``, one per URL and process.

    Raises:
        ImproperlyConfigured: an unsupported scheme, or redis-py missing.
    """
    key = (url, os.getpid())
    with _stores_lock:
        store = _stores.get(key)
        if store is not None:
            return store
        scheme = scheme_of(url)
        if scheme == "memory":
            from tqcore.locks.memory import MemoryLockStore

            store = MemoryLockStore.shared(url.split("://", 1)[1])
        elif scheme == "sqlite":
            from tqcore.locks.sqlite import SQLiteLockStore

            store = SQLiteLockStore(url)
        elif scheme in ("redis", "rediss"):
            try:
                from tqcore.locks.redis import RedisLockStore
            except ImportError as exc:
                raise ImproperlyConfigured(f"redis locks need redis-py: {exc}") from None
            store = RedisLockStore(url)
        else:
            raise ImproperlyConfigured(f"cannot keep locks in {redact(url)!r}")
        _stores[key] = store
        return store


def _after_fork_in_child() -> None:
    global _stores_lock
    _stores_lock = threading.Lock()
    _stores.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def app_lock(app: App, name: str, timeout: float | None = None, blocking: bool = True,
             blocking_timeout: float | None = None, **kwargs: Any) -> Lock:
    """A lock called ``name`` in ``app``'s lock store (what ``app.lock(...)`` returns).

    Args:
        app: the app whose store holds the lock.
        name: the lock's name.
        timeout: seconds the lock lives once taken; None renews it while held.
        blocking: wait while another owner holds it.
        blocking_timeout: most seconds to wait (None: forever).
        **kwargs: more :class:`Lock` options (``sleep``).
    """
    return Lock(store_for_url(store_url(app)), name, timeout=timeout, blocking=blocking,
                blocking_timeout=blocking_timeout, **kwargs)


from tqcore.locks.singleton import LockHeld, Singleton  # noqa: E402 - needs app_lock
