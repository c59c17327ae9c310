"""Result backends. :func:`backend_from_url` picks one by URL scheme."""

from __future__ import annotations

import importlib
from typing import Any

from tqcore.backends.base import ChordPart, ResultBackend
from tqcore.exceptions import ImproperlyConfigured
from tqcore.urls import redact, scheme_of

__all__ = ["ChordPart", "ResultBackend", "backend_from_url"]

BACKENDS: dict[str, str] = {
    "memory": "tqcore.backends.memory:MemoryBackend",
    "cache+memory": "tqcore.backends.memory:MemoryBackend",
    "sqlite": "tqcore.backends.sqlite:SQLiteBackend",
    "redis": "tqcore.backends.redis:RedisBackend",
    "rediss": "tqcore.backends.redis:RedisBackend",
    "rpc": "tqcore.backends.rpc:RPCBackend",
}


def backend_from_url(url: str, **options: Any) -> ResultBackend:
    """A result backend for ``url``.

    Raises:
        ImproperlyConfigured: malformed URL or unsupported scheme.
    """
    scheme = scheme_of(url)
    target = BACKENDS.get(scheme)
    if target is None:
        known = ", ".join(sorted(f"{s}://" for s in BACKENDS))
        raise ImproperlyConfigured(
            f"unsupported result backend {redact(url)!r} (supported: {known})")
    module, _, name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ImproperlyConfigured(f"the {scheme}:// result backend is not available: {exc}") \
            from None
    backend: ResultBackend = cls(url, **options)
    return backend
