"""Broker transports. :func:`from_url` picks one by URL scheme and imports its driver lazily."""

from __future__ import annotations

import importlib
from typing import Any

from tqcore.exceptions import ImproperlyConfigured
from tqcore.transports.base import (
    DeadLetter,
    Delivery,
    OutgoingMessage,
    QueueStats,
    Transport,
)
from tqcore.urls import redact, scheme_of

__all__ = ["DeadLetter", "Delivery", "OutgoingMessage", "QueueStats", "Transport", "from_url"]

#: scheme -> "module:Class"; drivers (redis, pika) load only when their URL is used.
TRANSPORTS: dict[str, str] = {
    "memory": "tqcore.transports.memory:MemoryTransport",
    "sqlite": "tqcore.transports.sqlite:SQLiteTransport",
    "redis": "tqcore.transports.redis:RedisTransport",
    "rediss": "tqcore.transports.redis:RedisTransport",
    "amqp": "tqcore.transports.amqp:AMQPTransport",
    "amqps": "tqcore.transports.amqp:AMQPTransport",
    "pyamqp": "tqcore.transports.amqp:AMQPTransport",
}


def from_url(url: str, **options: Any) -> Transport:
    """A transport for ``url``.

    Raises:
        ImproperlyConfigured: the URL is malformed or its scheme is not supported.
    """
    scheme = scheme_of(url)
    target = TRANSPORTS.get(scheme)
    if target is None:
        known = ", ".join(sorted(f"{s}://" for s in TRANSPORTS))
        raise ImproperlyConfigured(f"unsupported broker URL {redact(url)!r} (supported: {known})")
    module, _, name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ImproperlyConfigured(f"the {scheme}:// broker is not available: {exc}") from None
    transport: Transport = cls(url, **options)
    return transport
